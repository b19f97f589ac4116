#!/usr/bin/env bash
# Dump benchmark: shake-dump beside `redis-cli --rdb` on the same live source.
#
#   bash scripts/bench-dump.sh [--keys N] [--runs N] [--modes disk,diskless] [--keep DIR]
#
#   --keys N     keys of mixed types in the source (scripts/bench_gen.py mixed; default 1000000)
#   --runs N     runs of each tool in each mode, alternating which goes first; the best (shortest)
#                time is reported, with the highest peak RSS seen (default 3)
#   --modes M    comma-separated transfer modes: disk (repl-diskless-sync no: the source BGSAVEs
#                to its disk, then sends the file as $<len>) and diskless (the source's fork
#                streams the RDB as $EOF:<mark>); default both
#   --keep DIR   keep the last RDB of each tool in DIR
#
# What it does: builds shake-dump and shake-decode in release mode; starts Debian's Redis 7.0
# (/usr/bin/redis-server, the same version as /usr/bin/redis-cli) on a free loopback port with
# its directory in tmpfs (/dev/shm when it has room, else $TMPDIR; BENCH_TMPDIR overrides) and
# fills it; then, per mode and run, times `redis-cli --rdb FILE` and `shake-dump --source URL -o
# FILE -q` with /usr/bin/time (peak RSS, CPU seconds) and a nanosecond clock. Both tools fsync
# their file; shake-dump also checks the RDB (structure and CRC-64) while it streams. Each dump
# is checked afterwards (shake-decode counts the keys of shake-dump's file; both files must be
# within 1% of each other in size).
#
# Output: a Markdown table on stdout (progress on stderr) with the target: shake-dump's time
# <= 1.05x redis-cli's in each mode. MB is 10^6 bytes; MB/s = RDB size / wall seconds. The time
# of both tools is mostly the source's (its fork, its serialisation, its disk for the disk mode),
# which is why they are compared on the same source in the same run. A benchmark, not a test: the
# exit status is 0 whether the target is met or not (non-zero only when something could not run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NKEYS=1000000
RUNS=3
MODES=disk,diskless
KEEP=""

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --keys) NKEYS=${2:?--keys needs a number}; shift 2 ;;
        --keys=*) NKEYS=${1#*=}; shift ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --modes) MODES=${2:?--modes needs a list}; shift 2 ;;
        --modes=*) MODES=${1#*=}; shift ;;
        --keep) KEEP=${2:?--keep needs a directory}; shift 2 ;;
        --keep=*) KEEP=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-dump: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$NKEYS" "$RUNS"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench-dump: not a positive number: $n" >&2; exit 2; }
done
IFS=, read -r -a MODE_LIST <<<"$MODES"
for m in "${MODE_LIST[@]}"; do
    [[ "$m" == disk || "$m" == diskless ]] || { echo "bench-dump: unknown mode $m (disk, diskless)" >&2; exit 2; }
done

log() { echo "bench-dump: $*" >&2; }
die() { echo "bench-dump: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------
SERVER=/usr/bin/redis-server
CLI=/usr/bin/redis-cli
[[ -x "$SERVER" && -x "$CLI" ]] || die "needs Debian's redis-server and redis-cli (apt-get install redis-server)"
[[ -x /usr/bin/time ]] || die "needs GNU time (/usr/bin/time): apt-get install time"
log "building shake-dump and shake-decode (cargo build --release)"
(cd "$ROOT" && cargo build --release -q -p shake-dump -p shake-decode) >&2 || die "cargo build --release failed"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
DUMP=$BIN/shake-dump
DECODE=$BIN/shake-decode
[[ -x "$DUMP" && -x "$DECODE" ]] || die "no $DUMP or $DECODE after the build"

# --- source ------------------------------------------------------------------------------------
if [[ -z "${BENCH_TMPDIR:-}" ]] && [[ -d /dev/shm && -w /dev/shm ]] &&
    (($(df -Pk /dev/shm | awk 'NR == 2 {print $4}') > 4 * 1024 * 1024)); then
    BENCH_TMPDIR=/dev/shm
fi
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
TMP=$(mktemp -d "$BENCH_TMPDIR/bench-dump.XXXXXX")
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "starting Redis 7.0 on 127.0.0.1:$PORT in $TMP"
"$SERVER" --port "$PORT" --bind 127.0.0.1 --dir "$TMP" --save "" --appendonly no \
    --repl-diskless-sync-delay 0 --logfile "$TMP/redis.log" --daemonize no >/dev/null 2>&1 &
SERVER_PID=$!
cli() { "$CLI" -p "$PORT" "$@"; }
for _ in $(seq 100); do
    [[ "$(cli PING 2>/dev/null)" == PONG ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/redis.log" >&2; die "Redis 7.0 did not start"; }
    sleep 0.1
done
[[ "$(cli PING 2>/dev/null)" == PONG ]] || die "Redis 7.0 does not answer on port $PORT"

SECONDS=0
log "generating $NKEYS keys of mixed types (scripts/bench_gen.py mixed)"
python3 "$ROOT/scripts/bench_gen.py" mixed --keys "$NKEYS" | cli --pipe >"$TMP/pipe.log" 2>&1 ||
    { cat "$TMP/pipe.log" >&2; die "bench_gen.py | redis-cli --pipe failed"; }
grep -q "errors: 0," "$TMP/pipe.log" || { cat "$TMP/pipe.log" >&2; die "the server refused some generated commands"; }
KEYS=$(cli INFO keyspace | tr -d '\r' | sed -n 's/^db[0-9]*:keys=\([0-9]*\),.*/\1/p' | awk '{s+=$1} END {print s+0}')
[[ "$KEYS" == "$NKEYS" ]] || die "the server holds $KEYS keys, expected $NKEYS"
log "data generated in ${SECONDS}s"

# --- runs --------------------------------------------------------------------------------------
# measure NAME CMD...: runs CMD with /usr/bin/time; appends "wall_s rss_kib cpu_s" to $TMP/NAME.
measure() {
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s%N)
    /usr/bin/time -f "%M %U %S" -o "$TMP/time.out" "$@" >/dev/null 2>"$TMP/$name.err" ||
        { cat "$TMP/$name.err" >&2; die "$name failed: $*"; }
    t1=$(date +%s%N)
    read -r rss user sys <"$TMP/time.out"
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}') $rss $(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')" >>"$TMP/$name"
}
run_cli() { measure "cli-$1" "$CLI" -p "$PORT" --rdb "$TMP/cli.rdb"; }
run_dump() { measure "dump-$1" "$DUMP" --source "redis://127.0.0.1:$PORT" -o "$TMP/dump.rdb" -q; }

for mode in "${MODE_LIST[@]}"; do
    [[ $mode == diskless ]] && yn=yes || yn=no
    [[ "$(cli CONFIG SET repl-diskless-sync "$yn" | tr -d '\r')" == OK ]] || die "CONFIG SET repl-diskless-sync failed"
    for r in $(seq "$RUNS"); do
        log "$mode: run $r of $RUNS"
        if ((r % 2)); then run_cli "$mode"; run_dump "$mode"; else run_dump "$mode"; run_cli "$mode"; fi
        rm -f "$TMP/dump.rdb.part" "$TMP"/temp-*.rdb
    done
    # Both dumps are whole RDBs of this data.
    got=$("$DECODE" "$TMP/dump.rdb" --format keys -q | wc -l)
    [[ "$got" == "$KEYS" ]] || die "$mode: shake-dump's file holds $got keys, the source $KEYS"
    a=$(stat -c %s "$TMP/cli.rdb")
    b=$(stat -c %s "$TMP/dump.rdb")
    awk -v a="$a" -v b="$b" 'BEGIN {d = a - b; if (d < 0) d = -d; exit !(d <= a / 100)}' ||
        die "$mode: redis-cli wrote $a bytes, shake-dump $b"
    echo "$b" >"$TMP/size-$mode"
    if [[ -n "$KEEP" ]]; then
        mkdir -p "$KEEP"
        cp "$TMP/cli.rdb" "$KEEP/redis-cli-$mode.rdb"
        cp "$TMP/dump.rdb" "$KEEP/shake-dump-$mode.rdb"
    fi
done

# --- table -------------------------------------------------------------------------------------
# best NAME: "best_wall max_rss_kib cpu_of_best_run" over the runs.
best() { sort -n -k1,1 "$TMP/$1" | head -1 | awk -v rss="$(sort -n -k2,2 "$TMP/$1" | tail -1 | cut -d' ' -f2)" '{print $1, rss, $3}'; }
echo
echo "Source: Redis 7.0 ($("$SERVER" --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')), $KEYS keys of mixed types (bench_gen.py), loopback, files in $BENCH_TMPDIR; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); best of $RUNS runs"
echo
echo "| mode | tool | RDB MB | wall s (best) | MB/s | peak RSS MiB | CPU s | time vs redis-cli | target <= 1.05x | every run, s |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---|---|"
for mode in "${MODE_LIST[@]}"; do
    size=$(cat "$TMP/size-$mode")
    read -r cw crss ccpu <<<"$(best "cli-$mode")"
    read -r dw drss dcpu <<<"$(best "dump-$mode")"
    call=$(cut -d' ' -f1 "$TMP/cli-$mode" | tr '\n' ' ')
    dall=$(cut -d' ' -f1 "$TMP/dump-$mode" | tr '\n' ' ')
    awk -v m="$mode" -v s="$size" -v cw="$cw" -v crss="$crss" -v ccpu="$ccpu" \
        -v dw="$dw" -v drss="$drss" -v dcpu="$dcpu" -v call="$call" -v dall="$dall" 'BEGIN {
        mb = s / 1e6; r = dw / cw
        printf "| %s | redis-cli --rdb | %.1f | %.3f | %.1f | %.1f | %.2f | 1.00x | | %s|\n", m, mb, cw, mb / cw, crss / 1024, ccpu, call
        printf "| %s | shake-dump | %.1f | %.3f | %.1f | %.1f | %.2f | %.2fx | %s | %s|\n", m, mb, dw, mb / dw, drss / 1024, dcpu, r, (r <= 1.05 ? "met" : "MISSED"), dall
    }'
done
