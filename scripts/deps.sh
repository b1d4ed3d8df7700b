#!/bin/sh
# Installs the system packages cfgaudit's live tier and tests need, only where missing.
#   pciutils        lspci/setpci: the independent oracle in tests, and setpci drives live tests
#   python3-bpfcc   bcc's Python module (Debian). PyPI's "bcc" is unrelated: never pip-install it.
#   linux-headers-amd64  bcc compiles its programs against kernel headers; used only when the
#                   running kernel ships none (then /lib/modules/$(uname -r)/build is linked to them).
#   bpfcc-tools     (--bench only) bcc's own tools: exitsnoop-bpfcc is make bench's peer for probes-ready.
#   gcc libc6-dev   the e2e guest's static pokers (tests/e2e/src/*.c): the fast tier builds and runs them
#   systemd         systemd-analyze: the fast tier verifies contrib/cfgaudit-record.service with it
# --quiet-unless-root: say nothing when not root (make's test targets print their own line then).
set -eu
if [ "$(id -u)" != 0 ]; then
    [ "${1:-}" = --quiet-unless-root ] || echo "deps: not root, skipping system packages (the live tier needs root anyway)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: no apt-get; install pciutils, bcc's Python module and kernel headers by hand" >&2
    exit 0
fi
need=""
command -v lspci >/dev/null 2>&1 || need="$need pciutils"
[ -e /usr/lib/python3/dist-packages/bcc/__init__.py ] || need="$need python3-bpfcc"
command -v gcc >/dev/null 2>&1 || need="$need gcc"
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/libc.a ] || need="$need libc6-dev"
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
case " $* " in *" --bench "*) command -v exitsnoop-bpfcc >/dev/null 2>&1 || need="$need bpfcc-tools" ;; esac
rel=$(uname -r)
if [ ! -e "/lib/modules/$rel/build/include/generated/autoconf.h" ] && [ ! -e /sys/kernel/kheaders.tar.xz ]; then
    ls -d /usr/src/linux-headers-*-amd64 >/dev/null 2>&1 || need="$need linux-headers-amd64"
fi
if [ -n "$need" ]; then
    echo "deps: installing$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $need >/dev/null
fi
# The running kernel has no headers of its own: point bcc at Debian's newest amd64 headers.
if [ ! -e "/lib/modules/$rel/build/include/generated/autoconf.h" ] && [ ! -e /sys/kernel/kheaders.tar.xz ]; then
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$hdr" ] && [ -n "$common" ]; then
        mkdir -p "/lib/modules/$rel"
        ln -sfn "$hdr" "/lib/modules/$rel/build"
        ln -sfn "$common" "/lib/modules/$rel/source"
        echo "deps: linked /lib/modules/$rel/build -> $hdr"
    fi
fi
# bcc reads tracepoint formats from tracefs (and debugfs/tracing on older bcc): mount them.
for spec in "tracefs /sys/kernel/tracing" "debugfs /sys/kernel/debug"; do
    set -- $spec
    if [ -d "$2" ] && ! grep -q " $2 " /proc/mounts; then
        mount -t "$1" nodev "$2" 2>/dev/null && echo "deps: mounted $1 on $2"
    fi
done
exit 0
