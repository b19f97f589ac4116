#!/usr/bin/env bash
# shake-check benchmark: 1M small keys, equal on both sides, standalone Redis 7.0.
#
#   bash scripts/bench-check.sh [--keys N] [--runs N] [--mode M]
#
#   --keys N   keys in the source (DEBUG POPULATE: string values of 10 bytes; default 1000000)
#   --runs N   runs of each variant; the best (shortest) time is reported, with the highest
#              peak RSS seen (default 3)
#   --mode M   only this --mode (full, length, outline; default: all three)
#
# What it does: builds shake-check in release mode; starts two Debian Redis 7.0 servers
# (/usr/bin/redis-server) on free loopback ports with their directories in tmpfs; fills the
# source with DEBUG POPULATE and makes the target equal by replication (REPLICAOF, wait for the
# sync, REPLICAOF NO ONE). Then it times shake-check (--rounds 1 -q) with /usr/bin/time (peak
# RSS, CPU) and a nanosecond clock, checks that it exits 0 with no output, and prints a Markdown
# table: keys/s counts the source keys (each also looked up on the target, and every target key
# looked up on the source). A benchmark, not a test: exit 0 whether the >= 100k keys/s target is
# met or not (non-zero only when something could not run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NKEYS=1000000
RUNS=3
MODES="full length outline"

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --keys) NKEYS=${2:?--keys needs a number}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --mode) MODES=${2:?--mode needs full, length or outline}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-check: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { echo "bench-check: $*" >&2; }
die() { echo "bench-check: $*" >&2; exit 1; }

SERVER=/usr/bin/redis-server
CLI=/usr/bin/redis-cli
[[ -x "$SERVER" && -x "$CLI" ]] || die "needs Debian's redis-server and redis-cli"
[[ -x /usr/bin/time ]] || die "needs GNU time (/usr/bin/time)"
log "building shake-check (cargo build --release)"
(cd "$ROOT" && cargo build --release -q -p shake-check) >&2 || die "cargo build --release failed"
CHECK=${CARGO_TARGET_DIR:-$ROOT/target}/release/shake-check
[[ -x "$CHECK" ]] || die "no $CHECK after the build"

BASE=${BENCH_TMPDIR:-/dev/shm}
[[ -d "$BASE" && -w "$BASE" ]] || BASE=${TMPDIR:-/tmp}
TMP=$(mktemp -d "$BASE/bench-check.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
    local name=$1 port
    port=$(free_port)
    mkdir -p "$TMP/$name"
    "$SERVER" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP/$name" \
        --enable-debug-command yes --repl-diskless-sync-delay 0 \
        --logfile "$TMP/$name/log" >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        "$CLI" -p "$port" ping >/dev/null 2>&1 && { echo "$port"; return; }
        sleep 0.1
    done
    die "$name server did not start (see $TMP/$name/log)"
}

SRC=$(start source)
DST=$(start target)
log "filling the source with $NKEYS keys (DEBUG POPULATE)"
"$CLI" -p "$SRC" debug populate "$NKEYS" key 10 >/dev/null
log "copying to the target by replication"
"$CLI" -p "$DST" replicaof 127.0.0.1 "$SRC" >/dev/null
for _ in $(seq 600); do
    info=$("$CLI" -p "$DST" info replication)
    if grep -q 'master_link_status:up' <<<"$info" && grep -q 'master_sync_in_progress:0' <<<"$info"; then
        break
    fi
    sleep 0.1
done
"$CLI" -p "$DST" replicaof no one >/dev/null
[[ $("$CLI" -p "$DST" dbsize) == "$NKEYS" ]] || die "the target has $("$CLI" -p "$DST" dbsize) keys, not $NKEYS"

echo "| mode | keys | wall s | keys/s | peak RSS MiB | CPU s |"
echo "|---|---:|---:|---:|---:|---:|"
for mode in $MODES; do
    best=""; rss=0; cpu=""
    for run in $(seq "$RUNS"); do
        t0=$(date +%s%N)
        /usr/bin/time -v -o "$TMP/time" "$CHECK" --source "redis://127.0.0.1:$SRC" \
            --target "redis://127.0.0.1:$DST" --rounds 1 -q --mode "$mode" \
            >"$TMP/out" 2>"$TMP/err" || die "shake-check --mode $mode failed: $(cat "$TMP/err")"
        t1=$(date +%s%N)
        [[ ! -s "$TMP/out" ]] || die "shake-check reported differences on equal data: $(head -3 "$TMP/out")"
        ns=$((t1 - t0))
        r=$(awk -F': ' '/Maximum resident/ {print $2}' "$TMP/time")
        c=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u+s}' "$TMP/time")
        ((r > rss)) && rss=$r
        if [[ -z "$best" ]] || ((ns < best)); then best=$ns; cpu=$c; fi
        log "$mode run $run: $(awk -v n="$ns" 'BEGIN {printf "%.3f", n/1e9}') s, $((r / 1024)) MiB"
    done
    awk -v m="$mode" -v k="$NKEYS" -v ns="$best" -v rss="$rss" -v cpu="$cpu" \
        'BEGIN {s = ns / 1e9; printf "| %s | %d | %.3f | %\047d | %.1f | %s |\n", m, k, s, k / s, rss / 1024, cpu}'
done
