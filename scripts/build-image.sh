#!/usr/bin/env bash
# Builds the container image of the six tools (deploy/container/Containerfile) with Debian's
# podman/buildah, FROM scratch: nothing is pulled from a registry.
#
#   scripts/build-image.sh                          # cargo build --release, image shake-rs:latest
#   scripts/build-image.sh --bin-dir target/debug --tag shake-rs:test   # already-built binaries
#   scripts/build-image.sh --context-only DIR       # stage the build context in DIR, build nothing
#
# The binaries are glibc-dynamic (no musl target here), so the image gets exactly the shared
# libraries `ldd` lists for them, at the paths ldd gives, plus the dynamic loader; glibc's
# name-service switch (nsswitch.conf: hosts from files, then DNS, as Kubernetes service names
# need; the dns and files backends live in libc.so.6 since glibc 2.34, and the stub modules are
# copied too when present); the CA bundle for rediss://; passwd and group lines for the user
# 65532 the image runs as; and writable /work and /tmp for a run without volumes.
#
# Environment: PODMAN (default podman), PODMAN_OPTS (extra global options, e.g. the storage
# driver; the default suits a rootful sandbox without a systemd: vfs, cgroupfs, file events).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOOLS=(shake-dump shake-restore shake-decode shake-sync shake-rump shake-check)
bin_dir=""
tag="shake-rs:latest"
context_only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --context-only) context_only="$2"; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$bin_dir" ]; then
    cargo build --release --bins
    bin_dir=target/release
fi
for t in "${TOOLS[@]}"; do
    [ -x "$bin_dir/$t" ] || { echo "build-image.sh: $bin_dir/$t is missing: build the tools first (cargo build --release --bins) or pass --bin-dir" >&2; exit 1; }
done

if [ -n "$context_only" ]; then
    ctx="$context_only"
    rm -rf "$ctx"
    mkdir -p "$ctx"
else
    ctx="$(mktemp -d "${TMPDIR:-/tmp}/shake-image.XXXXXX")"
    trap 'rm -rf "$ctx"' EXIT
fi
mkdir -p "$ctx/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/work" "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"

# Copies a file to the same path under rootfs/, following symlinks (the image holds the real
# bytes under the name the loader asks for).
put() {
    local src="$1" dst="$ctx/rootfs$1"
    mkdir -p "$(dirname "$dst")"
    cp -L "$src" "$dst"
}

libs=()
for t in "${TOOLS[@]}"; do
    cp "$bin_dir/$t" "$ctx/bin/$t"
    # Keep symbols out of the image when the binaries have them (debug builds); the originals
    # are untouched.
    if command -v strip > /dev/null; then strip --strip-debug "$ctx/bin/$t" 2> /dev/null || true; fi
    # Lines are "name => /path (addr)", "/path (addr)" (the loader) or "linux-vdso.so.1 (addr)"
    # (in the kernel, no file). "not found" stops the build: the image would not run.
    while read -r line; do
        case "$line" in
            *"not found"*) echo "build-image.sh: $t: $line" >&2; exit 1 ;;
            *"=> /"*) libs+=("$(echo "$line" | sed 's/.*=> \(\/[^ ]*\).*/\1/')") ;;
            /*) libs+=("${line%% *}") ;;
        esac
    done < <(ldd "$bin_dir/$t")
done
# glibc loads name-service modules with dlopen, which ldd cannot see: copy the ones next to
# libc (stubs since 2.34, the real backends before it) so either glibc resolves names.
libc_dir=""
for l in "${libs[@]}"; do
    case "$l" in */libc.so.6) libc_dir="$(dirname "$l")" ;; esac
done
if [ -n "$libc_dir" ]; then
    for m in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
        [ -e "$libc_dir/$m" ] && libs+=("$libc_dir/$m")
    done
fi
printf '%s\n' "${libs[@]}" | sort -u > "$ctx/libs.txt"
while read -r l; do put "$l"; done < "$ctx/libs.txt"

cat > "$ctx/rootfs/etc/nsswitch.conf" << 'NSS'
passwd:   files
group:    files
hosts:    files dns
NSS
cat > "$ctx/rootfs/etc/passwd" << 'PW'
root:x:0:0:root:/root:/sbin/nologin
shake:x:65532:65532:shake-rs:/work:/sbin/nologin
PW
cat > "$ctx/rootfs/etc/group" << 'GR'
root:x:0:
shake:x:65532:
GR
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "build-image.sh: $ca is missing: apt-get install ca-certificates" >&2; exit 1; }
cp -L "$ca" "$ctx/rootfs$ca"
cp deploy/container/Containerfile "$ctx/Containerfile"
# The user owns its working directory (a Kubernetes pod mounts an emptyDir there instead).
chown -R 65532:65532 "$ctx/rootfs/work" 2> /dev/null || true

if [ -n "$context_only" ]; then
    echo "build-image.sh: context staged in $ctx" >&2
    exit 0
fi

PODMAN="${PODMAN:-podman}"
command -v "$PODMAN" > /dev/null || { echo "build-image.sh: $PODMAN not found: apt-get install podman buildah" >&2; exit 1; }
# shellcheck disable=SC2086 # PODMAN_OPTS is a list of options
"$PODMAN" ${PODMAN_OPTS:---storage-driver vfs --cgroup-manager cgroupfs --events-backend file} \
    build --network host --tag "$tag" --file "$ctx/Containerfile" "$ctx" >&2
echo "$tag"
