#!/usr/bin/env bash
# Sync benchmark: shake-sync beside a native replica (REPLICAOF) of the same source, in one run.
#
#   bash scripts/bench-sync.sh [--keys N] [--seconds S]
#
#   --keys N      keys of mixed types in the source (scripts/bench_gen.py mixed; default 1000000)
#   --seconds S   length of each write-load phase (default 15)
#
# What it does: builds shake-sync in release mode; starts Debian Redis 7.0 servers on free
# loopback ports (directories in tmpfs when it has room): a source filled with bench_gen.py, a
# native replica, and a target for shake-sync.
#
# 1. Full sync: the replica's REPLICAOF until `master_sync_in_progress:0` and link up, then
#    shake-sync until it reports the incremental phase; wall time of each (the same source data;
#    one after the other, so they do not share the two cores).
# 2. Incremental: `redis-benchmark` loads the source at its maximum rate (SET, INCR, LPUSH, HSET;
#    pipelined, 50 clients) for S seconds, twice: once with only the native replica attached,
#    once with only shake-sync running (it resumes from its checkpoint). During each, a probe
#    writes a timestamped key to the source every 50 ms and polls the replica/target until it
#    shows: the probe latencies give the lag (p50, p99, max). Applied ops/s: commands the
#    replica processed (INFO stats) / commands shake-sync applied (its /status), per second of
#    load, and how long the follower needed after the load stopped to catch up.
# 3. Peak RSS of each shake-sync process (VmHWM from /proc, read before it is stopped).
#
# Output: a Markdown table on stdout; targets: full sync <= 1.5x the replica's, peak RSS < 64 MiB.
# A benchmark, not a test: exit 0 whether targets are met or not.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NKEYS=1000000
SECS=15
while (($#)); do
    case $1 in
        --keys) NKEYS=${2:?}; shift 2 ;;
        --seconds) SECS=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-sync: unknown argument $1" >&2; exit 2 ;;
    esac
done
log() { echo "bench-sync: $*" >&2; }
die() { echo "bench-sync: $*" >&2; exit 1; }

SERVER=/usr/bin/redis-server
CLI=/usr/bin/redis-cli
BENCH=/usr/bin/redis-benchmark
for t in "$SERVER" "$CLI" "$BENCH"; do [[ -x $t ]] || die "needs $t"; done
log "building shake-sync (cargo build --release)"
(cd "$ROOT" && cargo build --release -q -p shake-sync) >&2 || die "cargo build --release failed"
SYNC=${CARGO_TARGET_DIR:-$ROOT/target}/release/shake-sync

if [[ -z "${BENCH_TMPDIR:-}" ]] && [[ -d /dev/shm && -w /dev/shm ]] &&
    (($(df -Pk /dev/shm | awk 'NR == 2 {print $4}') > 4 * 1024 * 1024)); then
    BENCH_TMPDIR=/dev/shm
fi
TMP=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/bench-sync.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_server() {
    local name=$1 port
    port=$(free_port)
    mkdir -p "$TMP/$name"
    "$SERVER" --port "$port" --bind 127.0.0.1 --dir "$TMP/$name" --save "" --appendonly no \
        --repl-diskless-sync yes --repl-diskless-sync-delay 0 --repl-backlog-size 512mb \
        --client-output-buffer-limit "replica 0 0 0" \
        --logfile "$TMP/$name/redis.log" --daemonize no >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [[ "$("$CLI" -p "$port" PING 2>/dev/null)" == PONG ]] && break; sleep 0.1; done
    echo "$port"
}
SPORT=$(start_server source)
RPORT=$(start_server replica)
TPORT=$(start_server target)
info() { "$CLI" -p "$1" INFO "$2" | tr -d '\r'; }
field() { info "$1" "$2" | sed -n "s/^$3:\(.*\)/\1/p"; }
now() { date +%s%N; }

log "generating $NKEYS keys (bench_gen.py mixed)"
python3 "$ROOT/scripts/bench_gen.py" mixed --keys "$NKEYS" | "$CLI" -p "$SPORT" --pipe >"$TMP/gen.log" 2>&1 ||
    { cat "$TMP/gen.log" >&2; die "loading failed"; }
MEM=$(field "$SPORT" memory used_memory_human)

# --- 1. full sync ------------------------------------------------------------------------------
log "native replica: REPLICAOF"
t0=$(now)
"$CLI" -p "$RPORT" REPLICAOF 127.0.0.1 "$SPORT" >/dev/null
until [[ "$(field "$RPORT" replication master_link_status)" == up && "$(field "$RPORT" replication master_sync_in_progress)" == 0 ]]; do sleep 0.02; done
NATIVE_FULL=$(( ($(now) - t0) / 1000000 ))
"$CLI" -p "$RPORT" REPLICAOF NO ONE >/dev/null
log "native full sync: ${NATIVE_FULL} ms"

STATUS_PORT=$(free_port)
run_sync() { # run_sync NAME: shake-sync in the background
    "$SYNC" --source "redis://127.0.0.1:$SPORT" --target "redis://127.0.0.1:$TPORT" \
        --status-addr "127.0.0.1:$STATUS_PORT" --log-interval 1 2>"$TMP/$1.log" >/dev/null &
    SYNC_PID=$!
    PIDS+=($SYNC_PID)
}
# stop_sync: SIGTERM; prints the process's peak RSS in kB (VmHWM, read just before the stop).
stop_sync() {
    sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SYNC_PID/status"
    kill -TERM "$SYNC_PID"
    wait "$SYNC_PID" || true
}
status() { curl -s "http://127.0.0.1:$STATUS_PORT/status" 2>/dev/null || python3 -c "
import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$STATUS_PORT/status').read().decode())" 2>/dev/null || true; }

log "shake-sync: full sync"
t0=$(now)
run_sync full
until grep -q "full sync applied" "$TMP/full.log" 2>/dev/null; do
    kill -0 "$SYNC_PID" 2>/dev/null || { cat "$TMP/full.log" >&2; die "shake-sync exited"; }
    sleep 0.02
done
OUR_FULL=$(( ($(now) - t0) / 1000000 ))
RSS_FULL=$(stop_sync)
log "shake-sync full sync: ${OUR_FULL} ms, peak RSS ${RSS_FULL} kB"

# --- 2. incremental ----------------------------------------------------------------------------
# probe.py FOLLOWER_PORT SECONDS: timestamps into the source, latency until the follower shows each.
cat >"$TMP/probe.py" <<'PY'
import socket, sys, time
src, dst, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def conn(p):
    s = socket.create_connection(("127.0.0.1", p)); return s, s.makefile("rb")
def call(c, *a):
    s, f = c
    s.sendall(b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a))
    line = f.readline()
    if line[:1] == b"$":
        n = int(line[1:-2]); return None if n < 0 else f.read(n + 2)[:-2]
    return line
S, D = conn(src), conn(dst)
lat, end, i = [], time.time() + secs, 0
while time.time() < end:
    v = str(time.time_ns()).encode()
    call(S, b"SET", b"bench:probe", v)
    t = time.time()
    while call(D, b"GET", b"bench:probe") != v:
        if time.time() - t > 60: break
        time.sleep(0.001)
    lat.append((time.time() - t) * 1000)
    time.sleep(0.05)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print("%.1f %.1f %.1f" % (q(0.5), q(0.99), lat[-1]))
PY
load() { # load SECONDS: redis-benchmark at full speed; prints the source's commands/s meanwhile
    local c0 c1 t0 t1
    c0=$(field "$SPORT" stats total_commands_processed)
    t0=$(now)
    timeout "$1" "$BENCH" -p "$SPORT" -c 50 -P 16 -r 100000 -n 100000000 -t set,incr,lpush,hset -q >/dev/null 2>&1 || true
    t1=$(now)
    c1=$(field "$SPORT" stats total_commands_processed)
    echo $(( (c1 - c0) * 1000000000 / (t1 - t0) ))
}

log "incremental, native replica"
"$CLI" -p "$RPORT" REPLICAOF 127.0.0.1 "$SPORT" >/dev/null
until [[ "$(field "$RPORT" replication master_link_status)" == up && "$(field "$RPORT" replication master_sync_in_progress)" == 0 ]]; do sleep 0.05; done
c0=$(field "$RPORT" stats total_commands_processed)
python3 "$TMP/probe.py" "$SPORT" "$RPORT" "$SECS" >"$TMP/native.probe" &
PROBE=$!
t0=$(now)
SRC_RATE_N=$(load "$SECS")
t1=$(now)
wait $PROBE
END_OFF=$(field "$SPORT" replication master_repl_offset)
until (( $(field "$RPORT" replication slave_repl_offset) >= END_OFF )); do sleep 0.01; done
NATIVE_DRAIN=$(( ($(now) - t1) / 1000000 ))
c1=$(field "$RPORT" stats total_commands_processed)
NATIVE_OPS=$(( (c1 - c0) * 1000000000 / (t1 - t0) ))
read -r N50 N99 NMAX <"$TMP/native.probe"
"$CLI" -p "$RPORT" REPLICAOF NO ONE >/dev/null

log "incremental, shake-sync"
run_sync incr
until grep -q "resumed from offset\|full sync applied" "$TMP/incr.log" 2>/dev/null; do sleep 0.05; done
# First catch up with the writes of the native phase, so the window measures the load only.
START_OFF=$(field "$SPORT" replication master_repl_offset)
until status | python3 -c "import json,sys; sys.exit(0 if json.load(sys.stdin)['shards'][0]['applied_offset'] >= $START_OFF else 1)" 2>/dev/null; do sleep 0.05; done
a0=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["shards"][0]["commands_applied"])')
python3 "$TMP/probe.py" "$SPORT" "$TPORT" "$SECS" >"$TMP/ours.probe" &
PROBE=$!
t0=$(now)
SRC_RATE_S=$(load "$SECS")
t1=$(now)
wait $PROBE
a1=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["shards"][0]["commands_applied"])')
END_OFF=$(field "$SPORT" replication master_repl_offset)
until status | python3 -c "import json,sys; sys.exit(0 if json.load(sys.stdin)['shards'][0]['applied_offset'] >= $END_OFF else 1)"; do sleep 0.01; done
OUR_DRAIN=$(( ($(now) - t1) / 1000000 ))
OUR_OPS=$(( (a1 - a0) * 1000000000 / (t1 - t0) ))
read -r O50 O99 OMAX <"$TMP/ours.probe"
RSS_INCR=$(stop_sync)

ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
cat <<EOF
| $NKEYS keys ($MEM in the source), Redis 7.0, loopback, 2 cores | native replica | shake-sync | ratio |
|---|---|---|---|
| full sync (ms) | $NATIVE_FULL | $OUR_FULL | $(ratio "$OUR_FULL" "$NATIVE_FULL")x |
| source load (commands/s, redis-benchmark, ${SECS}s) | $SRC_RATE_N | $SRC_RATE_S | |
| applied ops/s during the load | $NATIVE_OPS | $OUR_OPS | $(ratio "$OUR_OPS" "$NATIVE_OPS")x |
| lag p50 / p99 / max (ms, probe) | $N50 / $N99 / $NMAX | $O50 / $O99 / $OMAX | |
| catch-up after the load (ms) | $NATIVE_DRAIN | $OUR_DRAIN | |
| shake-sync peak RSS (full sync / incremental) | | $((RSS_FULL / 1024)) MiB / $((RSS_INCR / 1024)) MiB | |
EOF
