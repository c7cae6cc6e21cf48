#!/bin/sh
# mk/deps.sh - install the Debian packages ami-bus needs, and only those missing.
#
# Called by `make deps`, which every other target depends on, so a fresh
# Debian 12 machine needs no step before `make test` or `make demo`.
# Each requirement is "probe|package": a probe is either a pkg-config module
# name or "cmd:NAME" for a program on PATH. Nothing is downloaded except by
# apt-get from the machine's configured Debian mirror.
set -eu

REQS="
libzmq|libzmq3-dev
libczmq|libczmq-dev
libsodium|libsodium-dev
lmdb|liblmdb-dev
msgpack|libmsgpack-dev
cmocka|libcmocka-dev
cmd:pkg-config|pkg-config
cmd:supervisord|supervisor
cmd:mdb_stat|lmdb-utils
cmd:clang|clang
"

missing=""
for req in $REQS; do
    probe=${req%%|*}
    pkg=${req#*|}
    case $probe in
        cmd:*) command -v "${probe#cmd:}" >/dev/null 2>&1 && continue ;;
        *) command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$probe" && continue ;;
    esac
    missing="$missing $pkg"
done

# libFuzzer's runtime ships with clang's compiler-rt; probe for the library file
# because it has no pkg-config module.
if ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
    missing="$missing libclang-rt-dev"
fi

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages:$missing" >&2
    echo "deps: run 'sudo make deps' (or install them with apt-get) and retry" >&2
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
echo "deps: installed$missing"
