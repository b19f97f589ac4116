#!/usr/bin/env bash
# Scale-out benchmark (issue 16): what one shake-sync process sustains as its number of source
# masters grows, and 3 shard processes over 6 masters. The figures behind docs/operations.md's
# sizing section.
#
#   bash scripts/bench-shards.sh [--keys N] [--seconds S] [--rounds R] [--value-bytes B]
#
#   --keys N         distinct keys of each kind (SET strings, INCR counters, HSET fields) in the
#                    source cluster, spread over its masters (default 100000)
#   --seconds S      length of each write-load phase (default 8)
#   --rounds R       how often each setup runs; the table gives medians (default 3)
#   --value-bytes B  size of the SET values (default 200)
#
# What it does: builds shake-sync in release mode; starts Debian Redis 7.0 servers on free
# loopback ports (directories in tmpfs when it has room): source clusters of 1, 3 and 6 masters
# (slots in equal ranges, no replicas) and one standalone target. Each cluster is filled the same
# way (redis-benchmark --cluster: SET of B-byte values, INCR, HSET over N random keys each), so
# every setup moves the same amount of data, spread over more masters.
#
# Setups: one process over 1, 3 and 6 masters; 3 processes (--shard K/3) over the 6 masters.
# The rounds alternate the setups (1, 3, 6, 3x2, 1, 3, ...) so a slow moment of the shared
# machine does not land on one setup only. Each run:
# 1. Full sync: the target flushed, the process(es) started; wall time until every link is
#    incremental (/status). MB/s = the RDB bytes the links received / that time.
# 2. Incremental: redis-benchmark --cluster loads the source at its maximum rate (SET, INCR,
#    HSET; pipelined, 50 clients) for S seconds. Applied ops/s = the commands the links applied
#    during the load / S; catch-up = time after the load until every link has applied the
#    source's offset; sustained ops/s = every command of the load applied / (S + catch-up).
# 3. Peak RSS (VmHWM from /proc): at the end of the full sync, and over the whole run (read
#    before SIGTERM); of the process, or the largest of the 3 shards and their sum.
#
# Output: a Markdown table of medians on stdout (and every run on stderr). Everything shares the
# machine's cores: the servers, the load generator and shake-sync. A benchmark, not a test.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NKEYS=100000
SECS=8
ROUNDS=3
VBYTES=200
while (($#)); do
    case $1 in
        --keys) NKEYS=${2:?}; shift 2 ;;
        --seconds) SECS=${2:?}; shift 2 ;;
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --value-bytes) VBYTES=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-shards: unknown argument $1" >&2; exit 2 ;;
    esac
done
log() { echo "bench-shards: $*" >&2; }
die() { echo "bench-shards: $*" >&2; exit 1; }

SERVER=/usr/bin/redis-server
CLI=/usr/bin/redis-cli
BENCH=/usr/bin/redis-benchmark
for t in "$SERVER" "$CLI" "$BENCH" python3; do command -v "$t" >/dev/null || die "needs $t"; done
if [[ -z "${SHAKE_SYNC:-}" ]]; then
    log "building shake-sync (cargo build --release)"
    (cd "$ROOT" && cargo build --release -q -p shake-sync) >&2 || die "cargo build --release failed"
    SHAKE_SYNC=${CARGO_TARGET_DIR:-$ROOT/target}/release/shake-sync
fi
[[ -x $SHAKE_SYNC ]] || die "no shake-sync at $SHAKE_SYNC"

if [[ -z "${BENCH_TMPDIR:-}" ]] && [[ -d /dev/shm && -w /dev/shm ]] &&
    (($(df -Pk /dev/shm | awk 'NR == 2 {print $4}') > 2 * 1024 * 1024)); then
    BENCH_TMPDIR=/dev/shm
fi
TMP=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/bench-shards.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port [MAX]: a free loopback port, at most MAX (a cluster node's bus port is port+10000).
free_port() {
    python3 -c '
import socket, sys
top = int(sys.argv[1])
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p <= top: print(p); break' "${1:-65535}"
}
# start_server NAME [ARGS...]: a Redis 7.0 server in the background; its port in PORT. Not in a
# command substitution, so that PIDS (which the cleanup stops) sees it.
start_server() {
    local name=$1
    shift
    PORT=$(free_port 55000)
    mkdir -p "$TMP/$name"
    "$SERVER" --port "$PORT" --bind 127.0.0.1 --dir "$TMP/$name" --save "" --appendonly no \
        --repl-diskless-sync yes --repl-diskless-sync-delay 0 --repl-backlog-size 256mb \
        --client-output-buffer-limit "replica 0 0 0" \
        --logfile "$TMP/$name/redis.log" --daemonize no "$@" >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [[ "$("$CLI" -p "$PORT" PING 2>/dev/null)" == PONG ]] && break; sleep 0.1; done
    [[ "$("$CLI" -p "$PORT" PING 2>/dev/null)" == PONG ]] || die "$name did not start: $(tail -1 "$TMP/$name/redis.log")"
}
# start_cluster NAME M: M masters with the 16384 slots in equal ranges; their ports in PORTS.
start_cluster() {
    local name=$1 m=$2 i lo hi ok=0
    PORTS=()
    for ((i = 0; i < m; i++)); do
        start_server "$name-$i" --cluster-enabled yes --cluster-config-file nodes.conf
        PORTS+=("$PORT")
    done
    for ((i = 0; i < m; i++)); do
        lo=$((i * 16384 / m)); hi=$(((i + 1) * 16384 / m - 1))
        "$CLI" -p "${PORTS[$i]}" CLUSTER ADDSLOTSRANGE "$lo" "$hi" >/dev/null
        ((i == 0)) || "$CLI" -p "${PORTS[$i]}" CLUSTER MEET 127.0.0.1 "${PORTS[0]}" >/dev/null
    done
    for _ in $(seq 200); do
        ok=1
        for p in "${PORTS[@]}"; do
            "$CLI" -p "$p" CLUSTER INFO | tr -d '\r' | grep -q '^cluster_state:ok' || ok=0
            [[ $("$CLI" -p "$p" CLUSTER INFO | tr -d '\r' | sed -n 's/^cluster_known_nodes://p') == "$m" ]] || ok=0
        done
        ((ok)) && break
        sleep 0.1
    done
    ((ok)) || die "cluster $name did not come up"
}

start_server target
TPORT=$PORT
declare -A CLUSTER
for m in 1 3 6; do
    start_cluster "src$m" "$m"
    CLUSTER[$m]="${PORTS[*]}"
    first=${CLUSTER[$m]%% *}
    log "cluster of $m master(s) on ${CLUSTER[$m]}: filling ($NKEYS keys of each kind)"
    # redis-benchmark --cluster wants 2+ nodes; one master owns every slot, so no MOVED.
    cl=(--cluster); ((m > 1)) || cl=()
    "$BENCH" "${cl[@]}" -p "$first" -c 20 -P 32 -n $((NKEYS * 3)) -r "$NKEYS" -d "$VBYTES" \
        -t set,incr,hset -q >"$TMP/fill$m.log" 2>&1 || { cat "$TMP/fill$m.log" >&2; die "filling failed"; }
done

cat >"$TMP/run.py" <<'PY'
import json, os, signal, statistics, subprocess, sys, time, urllib.request

sync, cli, bench, tport, secs, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
clusters = json.loads(sys.argv[7])  # {"1": [ports], "3": [...], "6": [...]}
tmp, nkeys, vbytes = sys.argv[8], sys.argv[9], sys.argv[10]
SETUPS = [("1 process, 1 master", "1", 1), ("1 process, 3 masters", "3", 1),
          ("1 process, 6 masters", "6", 1), ("3 shards, 6 masters", "6", 3)]

def info(port, field, section="replication"):
    out = subprocess.run([cli, "-p", str(port), "INFO", section], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return None

def free_port():
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def links(ports):
    out = []
    for p in ports:
        try:
            out += json.load(urllib.request.urlopen("http://127.0.0.1:%d/status" % p, timeout=2))["shards"]
        except Exception:
            return None
    return out

def hwm(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0

def one(label, key, nproc, masters):
    ports = clusters[key]
    subprocess.run([cli, "-p", tport, "FLUSHALL"], capture_output=True, check=True)
    status = [free_port() for _ in range(nproc)]
    procs = []
    t0 = time.time()
    for k in range(nproc):
        args = [sync, "--source", "redis://127.0.0.1:%d" % ports[0], "--target", "redis://127.0.0.1:" + tport,
                "--status-addr", "127.0.0.1:%d" % status[k], "-q"]
        if nproc > 1:
            args += ["--shard", "%d/%d" % (k, nproc)]
        procs.append(subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(tmp, "sync-%d.log" % k), "w")))
    while True:
        ls = links(status)
        if ls is not None and len(ls) == masters and all(l["phase"] == "incremental" for l in ls):
            break
        for p in procs:
            if p.poll() is not None:
                sys.exit("shake-sync exited (%s): see %s" % (p.returncode, tmp))
        if time.time() - t0 > 600:
            sys.exit("not incremental after 600 s")
        time.sleep(0.02)
    full_s = time.time() - t0
    rdb = sum(l["rdb_bytes_received"] for l in ls)
    rss_full = [hwm(p.pid) for p in procs]
    a0 = sum(l["commands_applied"] for l in ls)
    off0 = {p: int(info(p, "master_repl_offset")) for p in ports}
    t1 = time.time()
    cmds0 = sum(int(info(p, "total_commands_processed", "stats")) for p in ports)
    cluster = ["--cluster"] if len(ports) > 1 else []  # redis-benchmark wants 2+ nodes
    subprocess.run(["timeout", str(secs), bench] + cluster + ["-p", str(ports[0]), "-c", "50", "-P", "16",
                    "-r", nkeys, "-n", "1000000000", "-d", vbytes, "-t", "set,incr,hset", "-q"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t2 = time.time()
    cmds1 = sum(int(info(p, "total_commands_processed", "stats")) for p in ports)
    a1 = sum(l["commands_applied"] for l in (links(status) or ls))
    end = {p: int(info(p, "master_repl_offset")) for p in ports}
    port_of = lambda l: int(l["source"].rsplit(":", 1)[-1].strip("/"))
    while True:
        ls = links(status)
        if ls is not None and all(l["applied_offset"] >= end[port_of(l)] for l in ls):
            break
        if time.time() - t2 > 600:
            sys.exit("not caught up 600 s after the load")
        time.sleep(0.01)
    t3 = time.time()
    a2 = sum(l["commands_applied"] for l in ls)
    rss = [hwm(p.pid) for p in procs]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)
    load_s, drain_s = t2 - t1, t3 - t2
    r = {
        "full_s": full_s, "rdb_mb": rdb / 1e6, "full_mbps": rdb / 1e6 / full_s,
        "src_ops": (cmds1 - cmds0) / load_s, "applied_ops": (a1 - a0) / load_s,
        "drain_s": drain_s, "sustained_ops": (a2 - a0) / (load_s + drain_s),
        "rss_full_mib": max(rss_full) / 1024, "rss_mib": max(rss) / 1024, "rss_sum_mib": sum(rss) / 1024,
    }
    print("bench-shards: %-22s " % label + " ".join("%s=%.1f" % kv for kv in r.items()), file=sys.stderr, flush=True)
    return r

results = {s[0]: [] for s in SETUPS}
for rnd in range(rounds):
    order = SETUPS if rnd % 2 == 0 else SETUPS[::-1]
    for label, key, nproc in order:
        results[label].append(one(label, key, nproc, int(key)))

med = lambda label, k: statistics.median(r[k] for r in results[label])
print("| setup (Redis 7.0 source cluster -> standalone target, loopback, 2 shared cores; medians of %d) "
      "| full sync: RDB MB / s / MB/s | source load (cmd/s) | applied during load (ops/s) | catch-up (s) "
      "| sustained (ops/s) | peak RSS: full sync / whole run (MiB) |" % rounds)
print("|---|---|---|---|---|---|---|")
for label, key, nproc in SETUPS:
    rss = "%.0f / %.0f" % (med(label, "rss_full_mib"), med(label, "rss_mib"))
    if nproc > 1:
        rss += " per shard (max), %.0f summed" % med(label, "rss_sum_mib")
    print("| %s | %.0f / %.2f / %.0f | %.0f | %.0f | %.2f | %.0f | %s |" % (
        label, med(label, "rdb_mb"), med(label, "full_s"), med(label, "full_mbps"), med(label, "src_ops"),
        med(label, "applied_ops"), med(label, "drain_s"), med(label, "sustained_ops"), rss))
PY

json_clusters=$(python3 -c '
import json, sys
print(json.dumps({k: [int(p) for p in v.split()] for k, v in (a.split("=", 1) for a in sys.argv[1:])}))
' "1=${CLUSTER[1]}" "3=${CLUSTER[3]}" "6=${CLUSTER[6]}")
log "$ROUNDS rounds of 4 setups, ${SECS}s of load each"
python3 "$TMP/run.py" "$SHAKE_SYNC" "$CLI" "$BENCH" "$TPORT" "$SECS" "$ROUNDS" "$json_clusters" "$TMP" "$NKEYS" "$VBYTES"
