#!/usr/bin/env bash
# Checks the Kubernetes manifests of deploy/kubernetes (scripts/test runs it; the tools come from
# scripts/install-deploy-tools.sh):
#
#   1. `kubectl kustomize` renders every overlay;
#   2. `kubernetes-validate --strict` validates each rendering against the Kubernetes schema it
#      ships (offline); kinds without a schema there (the PodMonitor CRD) are reported, not failed;
#   3. what a schema cannot see (python, below): one N per overlay (the StatefulSet's replicas
#      = every tool's --shards=N = each Job's completions and parallelism), passwords only from
#      the Secret (never argv, never a ConfigMap), probes on /status, and on every pod and
#      container: non-root, read-only root filesystem, no privilege escalation, capabilities
#      ALL dropped, seccomp RuntimeDefault, no API token, memory requests and limits;
#   4. `checkov` (offline, --skip-download) finds no failed check that docs/operations.md does not
#      justify: each failed check id must have a row `| CKV_... |` in its "checkov" table.
#
# Exit 0 when all pass, 1 otherwise; the renderings are left in $OUT (default a temp dir).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.cache/deploy-tools"
export PATH="$PATH:$VENV/bin"
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/shake-deploy.XXXXXX")}"
mkdir -p "$OUT"
fail=0

for tool in kubectl kubernetes-validate checkov; do
    command -v "$tool" > /dev/null || { echo "check-deploy: $tool not found: run scripts/install-deploy-tools.sh" >&2; exit 1; }
done

files=()
for overlay in "$ROOT"/deploy/kubernetes/overlays/*/; do
    name=$(basename "$overlay")
    if kubectl kustomize "$overlay" > "$OUT/$name.yaml" 2> "$OUT/$name.err"; then
        echo "check-deploy: kustomize   $name: $(grep -c '^kind:' "$OUT/$name.yaml") resources"
        files+=("$OUT/$name.yaml")
    else
        echo "check-deploy: kustomize   $name: FAILED"; cat "$OUT/$name.err"; fail=1
    fi
done

for f in "${files[@]}"; do
    name=$(basename "$f" .yaml)
    if kubernetes-validate --strict --quiet "$f" > "$OUT/$name.validate" 2>&1; then
        echo "check-deploy: validate    $name: ok$(grep -o "Couldn't find schema for kind [A-Za-z]*" "$OUT/$name.validate" | sed 's/.*kind / (no schema shipped for /; s/$/)/' | sort -u | tr -d '\n')"
    else
        echo "check-deploy: validate    $name: FAILED"; cat "$OUT/$name.validate"; fail=1
    fi
done

for f in "${files[@]}"; do
    "$VENV/bin/python" - "$f" << 'PY' || fail=1
import re, sys, yaml
path = sys.argv[1]
name = path.rsplit("/", 1)[-1][:-5]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
problems = []
def bad(what): problems.append(what)
TOOLS = {"shake-dump", "shake-restore", "shake-decode", "shake-sync", "shake-rump", "shake-check"}
stateful = [d for d in docs if d["kind"] == "StatefulSet"]
jobs = [d for d in docs if d["kind"] == "Job"]
n = stateful[0]["spec"]["replicas"] if stateful else (jobs[0]["spec"]["completions"] if jobs else None)
for d in docs:
    if d["kind"] == "ConfigMap":
        for k, v in (d.get("data") or {}).items():
            if re.search(r"rediss?://[^/@\s]*:[^/@\s]+@", v) or re.search(r"(?im)^\s*password\s*=\s*\"[^\"]+\"", v):
                bad(f"ConfigMap {d['metadata']['name']}: {k} holds a password")
    if d["kind"] not in ("StatefulSet", "Job"):
        continue
    what = f"{d['kind']} {d['metadata']['name']}"
    spec = d["spec"]
    if d["kind"] == "Job" and not (spec.get("completions") == spec.get("parallelism") == n):
        bad(f"{what}: completions {spec.get('completions')} / parallelism {spec.get('parallelism')}, N is {n}")
    pod = spec["template"]["spec"]
    psc = pod.get("securityContext", {})
    if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
        bad(f"{what}: the pod must run as a non-root user (runAsNonRoot, runAsUser)")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        bad(f"{what}: seccompProfile RuntimeDefault missing")
    if pod.get("automountServiceAccountToken") is not False:
        bad(f"{what}: automountServiceAccountToken must be false")
    for c in pod["containers"]:
        cw = f"{what} container {c['name']}"
        argv = c.get("command", []) + c.get("args", [])
        if not argv or argv[0] not in TOOLS:
            bad(f"{cw}: the command must start with one of the tools, not {argv[:1]}")
        if f"--shards={n}" not in argv:
            bad(f"{cw}: --shards={n} (N of this overlay) missing from {argv}")
        for a in argv:
            if "password" in a.lower() or re.search(r"://[^/@]*:[^/@]+@", a):
                bad(f"{cw}: a password in argv: {a}")
        env = {e["name"]: e for e in c.get("env", [])}
        for var in ("SHAKE_SOURCE_PASSWORD", "SHAKE_TARGET_PASSWORD"):
            if "secretKeyRef" not in env.get(var, {}).get("valueFrom", {}):
                bad(f"{cw}: {var} must come from a secretKeyRef")
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True \
                or sc.get("privileged") or "ALL" not in sc.get("capabilities", {}).get("drop", []):
            bad(f"{cw}: securityContext must forbid escalation, make the root filesystem read-only and drop ALL")
        res = c.get("resources", {})
        if "memory" not in res.get("requests", {}) or "memory" not in res.get("limits", {}):
            bad(f"{cw}: memory requests and limits missing")
        if d["kind"] == "StatefulSet":
            if "--status-addr" not in argv or argv[argv.index("--status-addr") + 1] != "0.0.0.0:9121":
                bad(f"{cw}: --status-addr 0.0.0.0:9121 missing (probes and scrapes reach the pod IP)")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                h = c.get(probe, {}).get("httpGet", {})
                if h.get("path") != "/status" or h.get("port") not in ("status", 9121):
                    bad(f"{cw}: {probe} must GET /status on the status port")
for p in problems:
    print(f"check-deploy: manifests   {name}: {p}")
print(f"check-deploy: manifests   {name}: {'ok' if not problems else 'FAILED'} (N = {n})")
sys.exit(1 if problems else 0)
PY
done

if [ ${#files[@]} -gt 0 ]; then
    args=()
    for f in "${files[@]}"; do args+=(-f "$f"); done
    # checkov exits 1 on failed checks: judged below against the docs instead.
    (cd "$OUT" && checkov "${args[@]}" --framework kubernetes --skip-download --compact -o json > "$OUT/checkov.json" 2> "$OUT/checkov.err") || true
    python3 - "$OUT/checkov.json" "$ROOT/docs/operations.md" << 'PY' || fail=1
import json, re, sys
try:
    data = json.load(open(sys.argv[1]))
except ValueError as e:
    print(f"check-deploy: checkov      no JSON report ({e}); see checkov.err")
    sys.exit(1)
reports = data if isinstance(data, list) else [data]
docs = open(sys.argv[2]).read()
justified = set(re.findall(r"^\|\s*`?(CKV2?_K8S_\d+)`?\s*\|", docs, re.M))
passed = failed = 0
bad = {}
for r in reports:
    res = r.get("results", {})
    passed += len(res.get("passed_checks", []))
    for c in res.get("failed_checks", []):
        failed += 1
        if c["check_id"] not in justified:
            bad.setdefault(c["check_id"], []).append(f'{c["resource"]} ({c["check_name"]})')
ids = sorted({c["check_id"] for r in reports for c in r.get("results", {}).get("failed_checks", [])})
print(f"check-deploy: checkov      {passed} passed, {failed} failed ({', '.join(ids) or 'none'}); justified in docs/operations.md: {', '.join(sorted(justified)) or 'none'}")
for cid, where in sorted(bad.items()):
    print(f"check-deploy: checkov      {cid} failed and docs/operations.md does not justify it: {'; '.join(where)}")
sys.exit(1 if bad else 0)
PY
fi
exit $fail
