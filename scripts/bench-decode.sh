#!/usr/bin/env bash
# Decode benchmark: shake-decode against redis-check-rdb and rdbtools on the same RDB files.
#
#   bash scripts/bench-decode.sh [--keys N] [--runs N] [--rdbtools-runs N] [--no-big] [--keep DIR]
#
#   --keys N           keys in the mixed-type file (default 1000000)
#   --runs N           runs of each shake-decode and redis-check-rdb measurement; the best
#                      (shortest) time is reported, with the highest peak RSS seen (default 5)
#   --rdbtools-runs N  runs of each rdbtools measurement (default 1: it takes minutes)
#   --no-big           skip the big-key files
#   --keep DIR         keep the generated RDB files in DIR (for profiling)
#
# What it does:
#   1. installs the servers (scripts/install-servers.sh, idempotent), builds shake-decode in
#      release mode, and installs rdbtools + python-lzf into a venv in .cache/bench-venv;
#   2. starts Redis 6.2 (RDB version 9, the newest rdbtools reads) on a free loopback port in a
#      temporary directory and fills it with scripts/bench_gen.py through `redis-cli --pipe`:
#        mixed.rdb  N keys of every type (strings, int strings, lists, sets as intset and
#                   hashtable, zsets as ziplist and skiplist, hashes as ziplist and hashtable,
#                   streams with consumer groups), a quarter with TTLs, in db 0 and db 1;
#        big.rdb    a 2M-element list, 1M-field hash, 1M-member set and 1M-member zset: shows
#                   whether peak RSS grows with the size of one collection;
#        bigstr.rdb two 64 MiB strings (random bytes; LZF-compressed text): the same for one
#                   big string;
#        str512.rdb one 512 MiB string (the Redis maximum; half random bytes, half text, so
#                   LZF-compressed and not UTF-8): jsonl, resp and memory, peak RSS beside
#                   the 64 MiB goal;
#   3. times every tool on the same file with /usr/bin/time (peak RSS, CPU seconds) and a
#      nanosecond clock, output to /dev/null, and prints a Markdown table with the targets:
#        shake-decode jsonl >= 10x rdbtools json; keys >= 3x redis-check-rdb (the faster of
#        6.2 and 7.0); peak RSS < 64 MiB for every shake-decode run, whatever the file.
#
# MB is 10^6 bytes, MiB is 2^20 bytes. MB/s = file size / wall seconds. The table goes to
# stdout, progress to stderr. It is a benchmark, not a test: the exit status is 0 whether the
# targets pass or not (non-zero only when something could not run). Every tool measured is
# single-threaded, so on a busy machine (the load average is printed with the results) the CPU
# seconds (user + sys) are the steadier figure; the verdicts use wall time, as the targets do,
# and the CPU-time ratio is shown beside them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NKEYS=1000000
RUNS=5
RDBTOOLS_RUNS=1
BIG=1
KEEP=""

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --keys) NKEYS=${2:?--keys needs a number}; shift 2 ;;
        --keys=*) NKEYS=${1#*=}; shift ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --rdbtools-runs) RDBTOOLS_RUNS=${2:?--rdbtools-runs needs a number}; shift 2 ;;
        --rdbtools-runs=*) RDBTOOLS_RUNS=${1#*=}; shift ;;
        --no-big) BIG=0; shift ;;
        --keep) KEEP=${2:?--keep needs a directory}; shift 2 ;;
        --keep=*) KEEP=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-decode: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$NKEYS" "$RUNS" "$RDBTOOLS_RUNS"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench-decode: not a positive number: $n" >&2; exit 2; }
done

log() { echo "bench-decode: $*" >&2; }
die() { echo "bench-decode: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------
log "installing servers (scripts/install-servers.sh)"
bash "$ROOT/scripts/install-servers.sh" >&2 || die "scripts/install-servers.sh failed"
R62=${SHAKE_REDIS62_SERVER:-$ROOT/.cache/servers/redis-6.2/redis-server}
R62_DIR=$(dirname "$R62")
R62_CLI=$R62_DIR/redis-cli
R62_CHECK=$R62_DIR/redis-check-rdb
R70_CHECK=$(command -v redis-check-rdb || true)
[[ -x "$R62_CLI" && -x "$R62_CHECK" ]] || die "no redis-cli / redis-check-rdb next to $R62"

if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time (apt-get install time)"
    sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    { "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q &&
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q time; } >&2 ||
        die "cannot install GNU time (/usr/bin/time): apt-get install time"
fi

log "building shake-decode (cargo build --release -p shake-decode)"
(cd "$ROOT" && cargo build --release -q -p shake-decode) >&2 || die "cargo build --release -p shake-decode failed"
SHAKE=${CARGO_TARGET_DIR:-$ROOT/target}/release/shake-decode
[[ -x "$SHAKE" ]] || die "no $SHAKE after the build"

# rdbtools: pure Python, reads RDB 1-9. Pinned, with python-lzf for compressed strings (without
# it rdbtools falls back to a pure-Python LZF decoder and gets slower still).
VENV=$ROOT/.cache/bench-venv
if ! "$VENV/bin/python" -c 'import rdbtools, lzf' 2>/dev/null; then
    log "installing rdbtools + python-lzf into $VENV"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (apt-get install python3-venv?)"
    "$VENV/bin/pip" install -q --disable-pip-version-check rdbtools==0.1.15 python-lzf==0.2.6 >&2 ||
        die "pip install rdbtools python-lzf failed"
fi
RDB=$VENV/bin/rdb

# --- data --------------------------------------------------------------------------------------
# The files live in tmpfs (/dev/shm) when it has room: on a machine whose page cache is small or
# busy, reads from disk would otherwise add I/O waits that hit the fastest tool hardest. Set
# BENCH_TMPDIR to choose another place.
if [[ -z "${BENCH_TMPDIR:-}" ]] && [[ -d /dev/shm && -w /dev/shm ]] &&
    (($(df -Pk /dev/shm | awk 'NR == 2 {print $4}') > 3 * 1024 * 1024)); then
    BENCH_TMPDIR=/dev/shm
fi
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
TMP=$(mktemp -d "$BENCH_TMPDIR/bench-decode.XXXXXX")
SERVER_PID=""
CHILD_PID="" # the command being waited for (run in the background so a signal is handled at once)
cleanup() {
    if [[ -n "$CHILD_PID" ]] && kill -0 "$CHILD_PID" 2>/dev/null; then
        pkill -TERM -P "$CHILD_PID" 2>/dev/null || true # its children (the timed tool, the generator)
        kill "$CHILD_PID" 2>/dev/null || true
    fi
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "starting Redis 6.2 on 127.0.0.1:$PORT in $TMP"
"$R62" --port "$PORT" --bind 127.0.0.1 --dir "$TMP" --save "" --appendonly no \
    --logfile "$TMP/redis.log" --daemonize no >/dev/null 2>&1 &
SERVER_PID=$!
cli() { "$R62_CLI" -p "$PORT" "$@"; }
for _ in $(seq 100); do
    [[ "$(cli PING 2>/dev/null)" == PONG ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/redis.log" >&2; die "Redis 6.2 did not start"; }
    sleep 0.1
done
[[ "$(cli PING 2>/dev/null)" == PONG ]] || die "Redis 6.2 does not answer on port $PORT"

# bg_wait CMD...: runs CMD in the background and waits for it (a signal then stops the script at
# once instead of after CMD); returns CMD's status.
bg_wait() {
    local rc=0
    "$@" &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}
# fill GENERATOR_ARGS...: runs bench_gen.py into the server, failing on any error reply.
fill() {
    gen_pipe() { python3 "$ROOT/scripts/bench_gen.py" "$@" | cli --pipe >"$TMP/pipe.log" 2>&1; }
    bg_wait gen_pipe "$@" || { cat "$TMP/pipe.log" >&2; die "bench_gen.py | redis-cli --pipe failed"; }
    grep -q "errors: 0," "$TMP/pipe.log" || { cat "$TMP/pipe.log" >&2; die "the server refused some generated commands"; }
}
# keyspace_keys: the number of keys in all databases, from INFO keyspace.
keyspace_keys() { cli INFO keyspace | tr -d '\r' | sed -n 's/^db[0-9]*:keys=\([0-9]*\),.*/\1/p' | awk '{s+=$1} END {print s+0}'; }
# save DEST: SAVE and copy the dump.
save() {
    [[ "$(cli SAVE | tr -d '\r')" == OK ]] || die "SAVE failed"
    cp "$TMP/dump.rdb" "$1"
    [[ "$(head -c 9 "$1")" == REDIS0009 ]] || die "$1 is not an RDB version 9 file"
}

SECONDS=0
log "generating $NKEYS keys of mixed types"
fill mixed --keys "$NKEYS"
MIXED_KEYS=$(keyspace_keys)
[[ "$MIXED_KEYS" == "$NKEYS" ]] || die "the server holds $MIXED_KEYS keys, expected $NKEYS"
save "$TMP/mixed.rdb"
if ((BIG)); then
    log "generating the big-key file"
    cli FLUSHALL >/dev/null
    fill big
    BIG_KEYS=$(keyspace_keys)
    save "$TMP/big.rdb"
    log "generating the big-string file"
    cli FLUSHALL >/dev/null
    fill bigstr
    BIGSTR_KEYS=$(keyspace_keys)
    save "$TMP/bigstr.rdb"
    log "generating the 512 MiB string file"
    cli FLUSHALL >/dev/null
    fill str512
    [[ "$(cli STRLEN big:string:512 | tr -d '\r')" == 536870912 ]] || die "the 512 MiB string was not built"
    save "$TMP/str512.rdb"
    cli FLUSHALL >/dev/null
fi
log "data generated in ${SECONDS}s; stopping Redis 6.2"
cli SHUTDOWN NOSAVE >/dev/null 2>&1 || true
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""
rm -f "$TMP/dump.rdb"
if [[ -n "$KEEP" ]]; then
    mkdir -p "$KEEP"
    cp "$TMP/mixed.rdb" "$KEEP/"
    ((BIG)) && cp "$TMP/big.rdb" "$TMP/bigstr.rdb" "$TMP/str512.rdb" "$KEEP/"
    log "kept the RDB files in $KEEP"
fi

# Sanity: shake-decode and redis-check-rdb see every key.
got=$("$SHAKE" "$TMP/mixed.rdb" --format keys -q | wc -l)
[[ "$got" == "$MIXED_KEYS" ]] || die "shake-decode --format keys printed $got keys, the server held $MIXED_KEYS"
got=$("$R62_CHECK" "$TMP/mixed.rdb" | sed -n 's/.*\[info\] \([0-9]*\) keys read.*/\1/p')
[[ "$got" == "$MIXED_KEYS" ]] || die "redis-check-rdb 6.2 read $got keys, the server held $MIXED_KEYS"

# --- measurements -------------------------------------------------------------------------------
# lt A B: succeeds when the decimal A < B.
lt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a < b)}'; }

# measure NAME RUNS CMD...: runs CMD (stdout to /dev/null) RUNS times; sets SEC (best wall time),
# CPU (least user + sys seconds) and RSS_KIB (highest peak RSS). Fails if CMD fails.
measure() {
    local name=$1 runs=$2 i t0 t1 rss sec cpu
    shift 2
    SEC="" CPU="" RSS_KIB=0
    for ((i = 1; i <= runs; i++)); do
        t0=$(date +%s%N)
        bg_wait /usr/bin/time -f '%M %U %S' -o "$TMP/time.txt" "$@" >/dev/null 2>"$TMP/stderr.txt" ||
            { cat "$TMP/stderr.txt" >&2; die "$name failed: $*"; }
        t1=$(date +%s%N)
        sec=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
        read -r rss cpu < <(tail -n 1 "$TMP/time.txt" | awk '{printf "%d %.2f\n", $1, $2 + $3}')
        if [[ -z "$SEC" ]] || lt "$sec" "$SEC"; then SEC=$sec; fi
        if [[ -z "$CPU" ]] || lt "$cpu" "$CPU"; then CPU=$cpu; fi
        if ((rss > RSS_KIB)); then RSS_KIB=$rss; fi
        log "  $name run $i/$runs: ${sec}s wall, ${cpu}s CPU, peak RSS $((rss / 1024)) MiB"
    done
}

ROWS=()       # Markdown rows
declare -A T  # wall seconds by id
declare -A C  # CPU seconds by id
declare -A M  # peak RSS MiB by id
# row ID FILE TOOL MODE RUNS CMD...
row() {
    local id=$1 file=$2 tool=$3 mode=$4 runs=$5 size mbs mib
    shift 5
    measure "$tool $mode ($(basename "$file"))" "$runs" "$@"
    size=$(stat -c %s "$file")
    mbs=$(awk -v s="$size" -v t="$SEC" 'BEGIN {printf "%.1f", (t > 0 ? s / 1e6 / t : 0)}')
    mib=$(awk -v k="$RSS_KIB" 'BEGIN {printf "%.1f", k / 1024}')
    T[$id]=$SEC
    C[$id]=$CPU
    M[$id]=$mib
    ROWS+=("| $(basename "$file") | $tool | $mode | $SEC | $CPU | $mbs | $mib |")
}

cat "$TMP/mixed.rdb" >/dev/null # in the page cache for every tool alike
((BIG)) && cat "$TMP/big.rdb" "$TMP/bigstr.rdb" "$TMP/str512.rdb" >/dev/null
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
M1=$TMP/mixed.rdb
log "measuring on $(basename "$M1") (shake-decode and redis-check-rdb: best of $RUNS; rdbtools: best of $RDBTOOLS_RUNS)"
row sd_jsonl "$M1" shake-decode "jsonl" "$RUNS" "$SHAKE" "$M1" --format jsonl -q -o /dev/null
row sd_keys "$M1" shake-decode "keys" "$RUNS" "$SHAKE" "$M1" --format keys -q -o /dev/null
row sd_resp "$M1" shake-decode "resp" "$RUNS" "$SHAKE" "$M1" --format resp -q -o /dev/null
row sd_mem "$M1" shake-decode "memory" "$RUNS" "$SHAKE" "$M1" --format memory -q -o /dev/null
row rc62 "$M1" "redis-check-rdb 6.2" "check" "$RUNS" "$R62_CHECK" "$M1"
if [[ -n "$R70_CHECK" ]]; then
    R70_NAME="redis-check-rdb $("$R70_CHECK" --version 2>/dev/null | awk '{print $2}' | cut -d. -f1-2)"
    row rc70 "$M1" "$R70_NAME" "check" "$RUNS" "$R70_CHECK" "$M1"
fi
row rt_json "$M1" "rdbtools 0.1.15" "json" "$RDBTOOLS_RUNS" "$RDB" --command json "$M1"
row rt_keys "$M1" "rdbtools 0.1.15" "justkeys" "$RDBTOOLS_RUNS" "$RDB" --command justkeys "$M1"
if ((BIG)); then
    for f in big bigstr; do
        B1=$TMP/$f.rdb
        log "measuring on $f.rdb"
        row ${f}_jsonl "$B1" shake-decode "jsonl" "$RUNS" "$SHAKE" "$B1" --format jsonl -q -o /dev/null
        row ${f}_keys "$B1" shake-decode "keys" "$RUNS" "$SHAKE" "$B1" --format keys -q -o /dev/null
        row ${f}_resp "$B1" shake-decode "resp" "$RUNS" "$SHAKE" "$B1" --format resp -q -o /dev/null
        row ${f}_mem "$B1" shake-decode "memory" "$RUNS" "$SHAKE" "$B1" --format memory -q -o /dev/null
        row ${f}_rc62 "$B1" "redis-check-rdb 6.2" "check" "$RUNS" "$R62_CHECK" "$B1"
        if [[ -n "$R70_CHECK" ]]; then
            row ${f}_rc70 "$B1" "$R70_NAME" "check" "$RUNS" "$R70_CHECK" "$B1"
        fi
    done
    # One 512 MiB string: the long JSON value waits in a temporary file ($TMPDIR), not in memory.
    B1=$TMP/str512.rdb
    log "measuring on str512.rdb"
    row str512_jsonl "$B1" shake-decode "jsonl" "$RUNS" "$SHAKE" "$B1" --format jsonl -q -o /dev/null
    row str512_resp "$B1" shake-decode "resp" "$RUNS" "$SHAKE" "$B1" --format resp -q -o /dev/null
    row str512_mem "$B1" shake-decode "memory" "$RUNS" "$SHAKE" "$B1" --format memory -q -o /dev/null
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.1fx", a / b; else printf "n/a"}'; } # ratio SLOW_SEC FAST_SEC: "3.5x" (n/a: too short to time)
verdict() { awk -v r="${1%x}" -v t="$2" 'BEGIN {print (r + 0 >= t ? "PASS" : "FAIL")}'; } # verdict RATIO TARGET

jsonl_x=$(ratio "${T[rt_json]}" "${T[sd_jsonl]}")
jsonl_cx=$(ratio "${C[rt_json]}" "${C[sd_jsonl]}")
# keys against the faster redis-check-rdb (by wall time)
check_id=rc62 check_name=6.2
if [[ -n "${T[rc70]:-}" ]] && lt "${T[rc70]}" "${T[rc62]}"; then check_id=rc70 check_name=7.0; fi
keys_x=$(ratio "${T[$check_id]}" "${T[sd_keys]}")
check_cpu=${C[rc62]} # the CPU-time ratio is against the one faster by CPU time
if [[ -n "${C[rc70]:-}" ]] && lt "${C[rc70]}" "$check_cpu"; then check_cpu=${C[rc70]}; fi
keys_cx=$(ratio "$check_cpu" "${C[sd_keys]}")
keys_detail="wall: 6.2 $(ratio "${T[rc62]}" "${T[sd_keys]}")"
[[ -n "${T[rc70]:-}" ]] && keys_detail+=", 7.0 $(ratio "${T[rc70]}" "${T[sd_keys]}")"
# rss_line FILE_PREFIX LABEL: the target row for the highest shake-decode peak RSS on one file.
rss_line() {
    local p=$1 label=$2 id max=0 worst=""
    for id in ${p}_jsonl ${p}_keys ${p}_resp ${p}_mem; do
        [[ -n "${M[$id]:-}" ]] || continue
        if lt "$max" "${M[$id]}"; then max=${M[$id]} worst=${id#"${p}"_}; fi
    done
    [[ "$worst" == mem ]] && worst=memory
    echo "| shake-decode peak RSS < 64 MiB, $label | ${max} MiB (highest: $worst) | $(awk -v m="$max" 'BEGIN {print (m < 64 ? "PASS" : "FAIL")}') |"
}

size_of() { awk -v s="$(stat -c %s "$1")" 'BEGIN {printf "%.1f MB (%d bytes)", s / 1e6, s}'; }
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- shake-core shake-decode 2>/dev/null || GIT_REV="$GIT_REV (+ uncommitted changes)"

echo "## Decode benchmark"
echo
echo "- machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(uname -sr); load average $LOAD_BEFORE before, $LOAD_AFTER after"
echo "- shake-decode $("$SHAKE" --version | awk '{print $2}') at $GIT_REV, release build; $(rustc --version 2>/dev/null || echo rustc ?)"
echo "- mixed.rdb: $(size_of "$M1"), RDB 9 from Redis 6.2.14, $MIXED_KEYS keys (strings, lists, sets, zsets, hashes, streams; 25% with TTL)"
if ((BIG)); then
    echo "- big.rdb: $(size_of "$TMP/big.rdb"), $BIG_KEYS keys: list of 2,000,000 elements, hash of 1,000,000 fields, set and zset of 1,000,000 members"
    echo "- bigstr.rdb: $(size_of "$TMP/bigstr.rdb"), $BIGSTR_KEYS keys: two strings of 64 MiB (random bytes; text, LZF-compressed in the file) and a small one"
    echo "- str512.rdb: $(size_of "$TMP/str512.rdb"), 1 key: a string of 512 MiB (256 MiB random bytes, then text; LZF-compressed in the file)"
fi
echo "- files read from $BENCH_TMPDIR ($(df -PT "$BENCH_TMPDIR" | awk 'NR == 2 {print $2}'))"
echo "- wall seconds and CPU seconds (user + sys): best of $RUNS runs (rdbtools: best of $RDBTOOLS_RUNS); peak RSS: highest of those runs; output to /dev/null; MB/s = file size / wall seconds"
echo
echo "| file | tool | mode | wall s | CPU s | MB/s | peak RSS MiB |"
echo "|---|---|---|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
echo
echo "| target | measured (wall time; CPU time) | result |"
echo "|---|---|---|"
echo "| shake-decode jsonl >= 10x rdbtools json | $jsonl_x; $jsonl_cx | $(verdict "$jsonl_x" 10) |"
echo "| shake-decode keys >= 3x redis-check-rdb (the faster: $check_name) | $keys_x; $keys_cx ($keys_detail) | $(verdict "$keys_x" 3) |"
rss_line sd "mixed.rdb"
if ((BIG)); then
    rss_line big "big.rdb (big collections)"
    rss_line bigstr "bigstr.rdb (64 MiB strings)"
    rss_line str512 "str512.rdb (a 512 MiB string)"
fi
echo
echo "rdbtools 0.1.15's justkeys writes a key once, then once more for every element of a list, set,"
echo "zset or hash (its KeysOnlyCallback writes the key in rpush/sadd/zadd/hset too): far more lines"
echo "than keys. It is timed as it is."
