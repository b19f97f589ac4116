#!/usr/bin/env bash
# Restore benchmark: shake-restore beside its ceiling, `redis-cli --pipe` fed the equivalent
# RESTORE commands, on the same RDB and the same target.
#
#   bash scripts/bench-restore.sh [--keys N] [--runs N] [--keep DIR]
#
#   --keys N     keys of mixed types in the source (scripts/bench_gen.py mixed; default 1000000)
#   --runs N     runs of each variant, rotating which goes first; the best (shortest) time is
#                reported, with the highest peak RSS seen (default 3)
#   --keep DIR   keep the RDB and the RESP file in DIR
#
# What it does: builds shake-restore and shake-decode in release mode; starts two Debian Redis
# 7.0 servers (/usr/bin/redis-server, the version of /usr/bin/redis-cli) on free loopback ports
# with their directories in tmpfs (/dev/shm when it has room, else $TMPDIR; BENCH_TMPDIR
# overrides): a source, filled with bench_gen.py and SAVEd (the RDB), and a target. Before any
# timing it writes the ceiling's input once: for every key of every database, `SELECT db` and
# `RESTORE key ttl payload REPLACE [ABSTTL]` with the payload from DUMP and the deadline from
# PEXPIRETIME on the source (what shake-restore sends for the same key). Then, per run, the
# target is emptied (FLUSHALL) and each variant is timed with /usr/bin/time (peak RSS, CPU) and a
# nanosecond clock, and the target's key count is checked:
#
#   redis-cli --pipe < restore.resp                       the ceiling
#   shake-restore --on-conflict rewrite FILE              the same commands (RESTORE ... REPLACE)
#   shake-restore FILE                                    defaults (no REPLACE; conflicts panic)
#   shake-restore --no-verify-first FILE                  without the checksum pre-pass
#
# shake-restore reads the file twice by default (a pre-pass verifies the checksum and the
# databases before anything is written), which is inside its time.
#
# Output: a Markdown table on stdout (progress on stderr); the target: shake-restore's keys/s >=
# 0.9x the ceiling's. A benchmark, not a test: the exit status is 0 whether the target is met or
# not (non-zero only when something could not run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NKEYS=1000000
RUNS=3
KEEP=""

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --keys) NKEYS=${2:?--keys needs a number}; shift 2 ;;
        --keys=*) NKEYS=${1#*=}; shift ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --keep) KEEP=${2:?--keep needs a directory}; shift 2 ;;
        --keep=*) KEEP=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-restore: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$NKEYS" "$RUNS"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench-restore: not a positive number: $n" >&2; exit 2; }
done

log() { echo "bench-restore: $*" >&2; }
die() { echo "bench-restore: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------
SERVER=/usr/bin/redis-server
CLI=/usr/bin/redis-cli
[[ -x "$SERVER" && -x "$CLI" ]] || die "needs Debian's redis-server and redis-cli (apt-get install redis-server)"
[[ -x /usr/bin/time ]] || die "needs GNU time (/usr/bin/time): apt-get install time"
command -v python3 >/dev/null || die "needs python3"
log "building shake-restore and shake-decode (cargo build --release)"
(cd "$ROOT" && cargo build --release -q -p shake-restore -p shake-decode) >&2 || die "cargo build --release failed"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
RESTORE=$BIN/shake-restore
DECODE=$BIN/shake-decode
[[ -x "$RESTORE" && -x "$DECODE" ]] || die "no $RESTORE or $DECODE after the build"

# --- servers -----------------------------------------------------------------------------------
if [[ -z "${BENCH_TMPDIR:-}" ]] && [[ -d /dev/shm && -w /dev/shm ]] &&
    (($(df -Pk /dev/shm | awk 'NR == 2 {print $4}') > 4 * 1024 * 1024)); then
    BENCH_TMPDIR=/dev/shm
fi
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
TMP=$(mktemp -d "$BENCH_TMPDIR/bench-restore.XXXXXX")
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

# --- the ceiling's input: RESTORE commands with DUMP payloads, written once --------------------
SECONDS=0
log "writing RESTORE ... REPLACE commands from DUMP / PEXPIRETIME of every key"
python3 - "$SPORT" "$TMP/restore.resp" <<'PY'
import socket
import sys

port, path = int(sys.argv[1]), sys.argv[2]
sock = socket.create_connection(("127.0.0.1", port))
rd = sock.makefile("rb", buffering=1 << 20)


def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def reply():
    line = rd.readline()
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest
    if t == b"-":
        raise SystemExit("server error: " + rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = rd.read(n + 2)
        return data[:-2]
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [reply() for _ in range(n)]
    raise SystemExit("bad reply %r" % line)


def call(*args):
    sock.sendall(enc(*args))
    return reply()


dbs = []
for line in call("INFO", "keyspace").decode().splitlines():
    if line.startswith("db"):
        dbs.append(int(line.split(":")[0][2:]))
total = 0
with open(path, "wb", buffering=1 << 20) as out:
    for db in dbs:
        call("SELECT", db)
        out.write(enc("SELECT", db))
        keys, cursor = set(), b"0"
        while True:
            cursor, batch = call("SCAN", cursor, "COUNT", 10000)
            keys.update(batch)
            if cursor == b"0":
                break
        keys = sorted(keys)
        for i in range(0, len(keys), 1000):
            chunk = keys[i:i + 1000]
            sock.sendall(b"".join(enc("DUMP", k) + enc("PEXPIRETIME", k) for k in chunk))
            for k in chunk:
                payload, at = reply(), reply()
                if payload is None:
                    raise SystemExit("key %r vanished" % k)
                if at >= 0:
                    out.write(enc(b"RESTORE", k, at, payload, b"REPLACE", b"ABSTTL"))
                else:
                    out.write(enc(b"RESTORE", k, 0, payload, b"REPLACE"))
        total += len(keys)
print("bench-restore: %d RESTORE commands" % total, file=sys.stderr)
PY
log "RESP file written in ${SECONDS}s ($(($(stat -c %s "$TMP/restore.resp") / 1000000)) MB)"

# --- runs --------------------------------------------------------------------------------------
VARIANTS=(cli rewrite default noverify)
label() {
    case $1 in
        cli) echo 'redis-cli --pipe (RESTORE ... REPLACE)' ;;
        rewrite) echo 'shake-restore --on-conflict rewrite' ;;
        default) echo 'shake-restore (defaults)' ;;
        noverify) echo 'shake-restore --no-verify-first' ;;
    esac
}
URL=redis://127.0.0.1:$TPORT
# measure NAME CMD...: empties the target, runs CMD under /usr/bin/time (stdin from $STDIN),
# checks the target's key count; appends "wall_s rss_kib cpu_s" to $TMP/NAME.
measure() {
    local name=$1
    shift
    [[ "$(dst FLUSHALL | tr -d '\r')" == OK ]] || die "FLUSHALL failed"
    local t0 t1
    t0=$(date +%s%N)
    /usr/bin/time -f "%M %U %S" -o "$TMP/time.out" "$@" <"${STDIN:-/dev/null}" >"$TMP/$name.out" 2>"$TMP/$name.err" ||
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
        cli)
            STDIN=$TMP/restore.resp measure cli "$CLI" -p "$TPORT" --pipe
            grep -q "errors: 0," "$TMP/cli.out" || { cat "$TMP/cli.out" >&2; die "redis-cli --pipe saw errors"; }
            ;;
        rewrite) measure rewrite "$RESTORE" --target "$URL" -q --on-conflict rewrite "$RDB" ;;
        default) measure default "$RESTORE" --target "$URL" -q "$RDB" ;;
        noverify) measure noverify "$RESTORE" --target "$URL" -q --no-verify-first "$RDB" ;;
    esac
}
n=${#VARIANTS[@]}
for r in $(seq "$RUNS"); do
    log "run $r of $RUNS"
    for i in $(seq 0 $((n - 1))); do
        run "${VARIANTS[$(((i + r - 1) % n))]}"
    done
done
if [[ -n "$KEEP" ]]; then
    mkdir -p "$KEEP"
    cp "$RDB" "$KEEP/source.rdb"
    cp "$TMP/restore.resp" "$KEEP/restore.resp"
fi

# --- table -------------------------------------------------------------------------------------
# best NAME: "best_wall max_rss_kib cpu_of_best_run" over the runs.
best() { sort -n -k1,1 "$TMP/$1" | head -1 | awk -v rss="$(sort -n -k2,2 "$TMP/$1" | tail -1 | cut -d' ' -f2)" '{print $1, rss, $3}'; }
read -r cw _ _ <<<"$(best cli)"
echo
echo "Target: Redis 7.0 ($("$SERVER" --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')), $KEYS keys of mixed types (bench_gen.py mixed, 2 databases), RDB $(($(stat -c %s "$RDB") / 1000000)) MB, loopback, files in $BENCH_TMPDIR; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); best of $RUNS runs"
echo
echo "| tool | wall s (best) | keys/s | peak RSS MiB | CPU s | keys/s vs ceiling | target >= 0.9x | every run, s |"
echo "|---|---:|---:|---:|---:|---:|---|---|"
for v in "${VARIANTS[@]}"; do
    read -r w rss cpu <<<"$(best "$v")"
    all=$(cut -d' ' -f1 "$TMP/$v" | tr '\n' ' ')
    awk -v l="$(label "$v")" -v k="$KEYS" -v w="$w" -v rss="$rss" -v cpu="$cpu" -v cw="$cw" -v all="$all" -v v="$v" 'BEGIN {
        r = cw / w
        t = (v == "cli") ? "" : (r >= 0.9 ? "met" : "MISSED")
        printf "| %s | %.3f | %.0f | %.1f | %.2f | %.2fx | %s | %s|\n", l, w, k / w, rss / 1024, cpu, r, t, all
    }'
done
