#!/usr/bin/env bash
# shake-rump benchmark: shake-rump (SCAN + DUMP + PTTL + RESTORE from a live source) beside
# shake-restore of a SAVEd RDB of the same source, into the same target, in one run.
#
#   bash scripts/bench-rump.sh [--keys N] [--runs N]
#
#   --keys N     keys of mixed, mostly small types in the source (scripts/bench_gen.py mixed;
#                default 1000000)
#   --runs N     runs of each variant, rotating which goes first; the best (shortest) time is
#                reported, with the highest peak RSS seen (default 3)
#
# What it does: builds shake-rump and shake-restore in release mode; starts two Debian Redis 7.0
# servers (/usr/bin/redis-server) on free loopback ports with their directories in tmpfs
# (/dev/shm when it has room, else $TMPDIR; BENCH_TMPDIR overrides): a source, filled with
# bench_gen.py and SAVEd (the RDB shake-restore reads), and a target. Per run, the target is
# emptied (FLUSHALL) and each variant is timed with /usr/bin/time (peak RSS, CPU) and a
# nanosecond clock, and the target's key count is checked:
#
#   shake-restore FILE                                   the reference (defaults)
#   shake-rump --source SRC --target DST                 defaults (MEMORY USAGE probe on)
#   shake-rump --no-memory-probe                         one command less per key
#
# Output: a Markdown table on stdout (progress on stderr); the target: shake-rump's keys/s >= 0.7x
# shake-restore's. A benchmark, not a test: the exit status is 0 whether the target is met or
# not (non-zero only when something could not run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NKEYS=1000000
RUNS=3

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --keys) NKEYS=${2:?--keys needs a number}; shift 2 ;;
        --keys=*) NKEYS=${1#*=}; shift ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-rump: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$NKEYS" "$RUNS"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench-rump: not a positive number: $n" >&2; exit 2; }
done

log() { echo "bench-rump: $*" >&2; }
die() { echo "bench-rump: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------
SERVER=/usr/bin/redis-server
CLI=/usr/bin/redis-cli
[[ -x "$SERVER" && -x "$CLI" ]] || die "needs Debian's redis-server and redis-cli (apt-get install redis-server)"
[[ -x /usr/bin/time ]] || die "needs GNU time (/usr/bin/time): apt-get install time"
command -v python3 >/dev/null || die "needs python3"
log "building shake-rump and shake-restore (cargo build --release)"
(cd "$ROOT" && cargo build --release -q -p shake-rump -p shake-restore) >&2 || die "cargo build --release failed"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
RUMP=$BIN/shake-rump
RESTORE=$BIN/shake-restore
[[ -x "$RUMP" && -x "$RESTORE" ]] || die "no $RUMP or $RESTORE after the build"

# --- servers -----------------------------------------------------------------------------------
if [[ -z "${BENCH_TMPDIR:-}" ]] && [[ -d /dev/shm && -w /dev/shm ]] &&
    (($(df -Pk /dev/shm | awk 'NR == 2 {print $4}') > 4 * 1024 * 1024)); then
    BENCH_TMPDIR=/dev/shm
fi
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
TMP=$(mktemp -d "$BENCH_TMPDIR/bench-rump.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# start_server NAME: starts a Redis 7.0 in $TMP/NAME; prints its port.
start_server() {
    local name=$1 port
    port=$(free_port)
    mkdir -p "$TMP/$name"
    "$SERVER" --port "$port" --bind 127.0.0.1 --dir "$TMP/$name" --save "" --appendonly no \
        --logfile "$TMP/$name/redis.log" --daemonize no >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        [[ "$("$CLI" -p "$port" PING 2>/dev/null)" == PONG ]] && break
        sleep 0.1
    done
    [[ "$("$CLI" -p "$port" PING 2>/dev/null)" == PONG ]] || { cat "$TMP/$name/redis.log" >&2; die "Redis 7.0 ($name) did not start"; }
    echo "$port"
}
SPORT=$(start_server source)
TPORT=$(start_server target)
src() { "$CLI" -p "$SPORT" "$@"; }
dst() { "$CLI" -p "$TPORT" "$@"; }
keycount() { "$CLI" -p "$1" INFO keyspace | tr -d '\r' | sed -n 's/^db[0-9]*:keys=\([0-9]*\),.*/\1/p' | awk '{s+=$1} END {print s+0}'; }
log "source on 127.0.0.1:$SPORT, target on 127.0.0.1:$TPORT, files in $TMP"

SECONDS=0
log "generating $NKEYS keys of mixed types (scripts/bench_gen.py mixed)"
python3 "$ROOT/scripts/bench_gen.py" mixed --keys "$NKEYS" | src --pipe >"$TMP/gen.log" 2>&1 ||
    { cat "$TMP/gen.log" >&2; die "bench_gen.py | redis-cli --pipe failed"; }
grep -q "errors: 0," "$TMP/gen.log" || { cat "$TMP/gen.log" >&2; die "the source refused some generated commands"; }
KEYS=$(keycount "$SPORT")
[[ "$KEYS" == "$NKEYS" ]] || die "the source holds $KEYS keys, expected $NKEYS"
[[ "$(src SAVE | tr -d '\r')" == OK ]] || die "SAVE failed"
RDB=$TMP/source/dump.rdb
log "data generated and saved in ${SECONDS}s ($(($(stat -c %s "$RDB") / 1000000)) MB RDB)"

# --- runs --------------------------------------------------------------------------------------
VARIANTS=(restore rump noprobe)
label() {
    case $1 in
        restore) echo 'shake-restore FILE (defaults)' ;;
        rump) echo 'shake-rump (defaults)' ;;
        noprobe) echo 'shake-rump --no-memory-probe' ;;
    esac
}
URL=redis://127.0.0.1:$TPORT
SURL=redis://127.0.0.1:$SPORT
# measure NAME CMD...: empties the target, runs CMD under /usr/bin/time, checks the target's key
# count; appends "wall_s rss_kib cpu_s" to $TMP/NAME.
measure() {
    local name=$1
    shift
    [[ "$(dst FLUSHALL | tr -d '\r')" == OK ]] || die "FLUSHALL failed"
    local t0 t1
    t0=$(date +%s%N)
    /usr/bin/time -f "%M %U %S" -o "$TMP/time.out" "$@" </dev/null >"$TMP/$name.out" 2>"$TMP/$name.err" ||
        { cat "$TMP/$name.err" "$TMP/$name.out" >&2; die "$name failed: $*"; }
    t1=$(date +%s%N)
    local got
    got=$(keycount "$TPORT")
    [[ "$got" == "$KEYS" ]] || { cat "$TMP/$name.err" "$TMP/$name.out" >&2; die "$name: the target holds $got keys, expected $KEYS"; }
    read -r rss user sys <"$TMP/time.out"
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}') $rss $(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')" >>"$TMP/$name"
}
run() {
    case $1 in
        restore) measure restore "$RESTORE" --target "$URL" -q "$RDB" ;;
        rump) measure rump "$RUMP" --source "$SURL" --target "$URL" -q ;;
        noprobe) measure noprobe "$RUMP" --source "$SURL" --target "$URL" -q --no-memory-probe ;;
    esac
}
n=${#VARIANTS[@]}
for r in $(seq "$RUNS"); do
    log "run $r of $RUNS"
    for i in $(seq 0 $((n - 1))); do
        run "${VARIANTS[$(((i + r - 1) % n))]}"
    done
done

# --- table -------------------------------------------------------------------------------------
# best NAME: "best_wall max_rss_kib cpu_of_best_run" over the runs.
best() { sort -n -k1,1 "$TMP/$1" | head -1 | awk -v rss="$(sort -n -k2,2 "$TMP/$1" | tail -1 | cut -d' ' -f2)" '{print $1, rss, $3}'; }
read -r rw _ _ <<<"$(best restore)"
echo
echo "Source and target: Redis 7.0 ($("$SERVER" --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')), $KEYS keys of mixed types (bench_gen.py mixed, 2 databases), RDB $(($(stat -c %s "$RDB") / 1000000)) MB, loopback, files in $BENCH_TMPDIR; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); best of $RUNS runs"
echo
echo "| tool | wall s (best) | keys/s | peak RSS MiB | CPU s | keys/s vs shake-restore | target >= 0.7x | every run, s |"
echo "|---|---:|---:|---:|---:|---:|---|---|"
for v in "${VARIANTS[@]}"; do
    read -r w rss cpu <<<"$(best "$v")"
    all=$(cut -d' ' -f1 "$TMP/$v" | tr '\n' ' ')
    awk -v l="$(label "$v")" -v k="$KEYS" -v w="$w" -v rss="$rss" -v cpu="$cpu" -v rw="$rw" -v all="$all" -v v="$v" 'BEGIN {
        r = rw / w
        t = (v == "restore") ? "" : (r >= 0.7 ? "met" : "MISSED")
        printf "| %s | %.3f | %.0f | %.1f | %.2f | %.2fx | %s | %s|\n", l, w, k / w, rss / 1024, cpu, r, t, all
    }'
done
