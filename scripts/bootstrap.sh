#!/usr/bin/env bash
# Make a Debian 12 machine ready to build, test and run bcc_exporter.
#
#   sudo scripts/bootstrap.sh                     # host: Debian packages, kernel headers,
#                                                 # tracefs/debugfs mounts, .venv (editable, [test])
#   BOOTSTRAP_IN_IMAGE=1 scripts/bootstrap.sh     # image's final stage: the runtime packages
#                                                 # and fallback headers in /opt/kernel-headers
#                                                 # (no mounts or venv: the build stage makes it)
#   scripts/bootstrap.sh --list-packages          # print the Debian packages (all) and exit
#
# Idempotent. With nothing missing it only checks (dpkg-query, two mountpoints, one python
# start) and takes a fraction of a second. Works from any cwd; must run as root.
set -euo pipefail

# The Debian packages. The image carries RUNTIME_PACKAGES only: the Dockerfile's final stage
# installs them by running this script, its build stage names python3-venv from DEV_PACKAGES.
# A machine that builds and tests gets both (tests/unit/test_bootstrap.py checks that nothing
# installs a package from another list).
RUNTIME_PACKAGES=(
    python3-bpfcc   # the bcc module; it imports only under Debian's /usr/bin/python3
)
DEV_PACKAGES=(
    python3-venv    # .venv, and the image's build stage
    bpfcc-tools     # biolatency, runqlat, ...: the reference numbers our metrics must match
    bpftool
    bpftrace
    prometheus      # for promtool (checks /metrics exposition); its server is not started
    linux-perf      # perf: the page faults test_prog_pagefaults compares with
    systemtap-sdt-dev  # <sys/sdt.h>: the USDT probes of the binary test_bpftrace builds
)
IN_IMAGE=${BOOTSTRAP_IN_IMAGE:-0}
if [[ $IN_IMAGE == 1 ]]; then
    PACKAGES=("${RUNTIME_PACKAGES[@]}")
else
    PACKAGES=("${RUNTIME_PACKAGES[@]}" "${DEV_PACKAGES[@]}")
fi

say() { echo "bootstrap: $*"; }
warn() { echo "bootstrap: WARNING: $*" >&2; }
die() {
    echo "bootstrap: ERROR: $*" >&2
    exit 1
}

if [[ ${1:-} == --list-packages ]]; then
    printf '%s\n' "${PACKAGES[@]}"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [--list-packages]"

START=$EPOCHREALTIME
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"

[[ $(id -u) -eq 0 ]] ||
    die "must run as root: it installs Debian packages, links kernel headers and mounts tracefs (try: sudo $0)"
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null ||
    die "needs Debian (apt-get/dpkg-query not found)"

# One bootstrap at a time on this checkout (two CI jobs, parallel make): lock this file.
exec 9<"${BASH_SOURCE[0]}"
flock 9

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
POLICY_RC=/usr/sbin/policy-rc.d

apt_update_once() {
    if [[ $APT_UPDATED == 0 ]]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
}

# Print the packages among "$@" that are not installed.
missing_packages() {
    local installed p
    installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "$@" 2>/dev/null |
        awk '$1 == "ii" { print $2 }') || true
    for p in "$@"; do
        grep -qxF -- "$p" <<<"$installed" || echo "$p"
    done
}

remove_policy_rc() { rm -f "$POLICY_RC"; }

apt_install() {
    apt_update_once
    # Package scripts must not start services (the prometheus package would start a server).
    # Docker-made systems already have a policy-rc.d that says so; elsewhere add one for the
    # duration of the install.
    local own_policy=0
    if [[ ! -e $POLICY_RC ]]; then
        printf '#!/bin/sh\n# bcc_exporter bootstrap: no service starts during apt-get install\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        own_policy=1
        trap remove_policy_rc EXIT
    fi
    apt-get install -y -q --no-install-recommends "$@"
    if [[ $own_policy == 1 ]]; then
        remove_policy_rc
        trap - EXIT
    fi
}

# --- 1. Debian packages -------------------------------------------------------------------
mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    apt_install "${missing[@]}"
    # promtool is all we want from the prometheus package: keep its server from starting at boot.
    if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
        say "disabled prometheus.service (installed for promtool only)"
    fi
else
    say "ok Debian packages (${PACKAGES[*]})"
fi

# --- 2. Kernel headers for the running kernel (BCC compiles against them) -----------------
KVER=$(uname -r)
KDIR=/lib/modules/$KVER

# Usable = build/include exists and kconfig.h is found in build or source (Debian splits a
# kernel's headers in an -<arch> dir (build) and a -common dir (source); BCC needs both).
headers_ok() {
    [[ -d $KDIR/build/include ]] &&
        { [[ -e $KDIR/build/include/linux/kconfig.h ]] || [[ -e $KDIR/source/include/linux/kconfig.h ]]; }
}

report_headers() {
    local target
    target=$(readlink -f "$KDIR/build")
    if [[ $target == /usr/src/linux-headers-* && ${target##*/} != "linux-headers-$KVER" ]]; then
        warn "no headers for kernel $KVER; compiling against Debian's ${target##*/linux-headers-} headers ($KDIR/build -> $target): struct layouts may differ, so BPF programs must read kernel data through tracepoint args and helpers, never raw struct offsets"
    else
        say "ok kernel headers for $KVER ($target)"
    fi
}

headers_flavour() {
    local arch
    arch=$(dpkg --print-architecture)
    case $arch in
    amd64 | arm64 | s390x) echo "$arch" ;;
    ppc64el) echo powerpc64le ;;
    *) die "no Debian kernel headers metapackage known for architecture $arch" ;;
    esac
}

# Kernel version of the headers Debian's metapackage ($1) installed, e.g. 6.1.0-56-amd64.
debian_headers_version() {
    local dep ver d
    dep=$(dpkg-query -W -f='${Depends}' "$1" 2>/dev/null | grep -o 'linux-headers-[^ ,]*' | head -n1) || true
    ver=${dep#linux-headers-}
    if [[ -n $ver && -d /lib/modules/$ver/build/include ]]; then
        echo "$ver"
        return
    fi
    # Fallback: the newest other kernel version that has headers.
    for d in /lib/modules/*/build/include; do
        [[ -d $d ]] || continue
        ver=${d#/lib/modules/}
        ver=${ver%/build/include}
        [[ $ver == "$KVER" ]] || echo "$ver"
    done | sort -V | tail -n1
}

# Point $KDIR/build and $KDIR/source at what /lib/modules/$1/{build,source} point at.
link_headers() {
    local ver=$1 l
    mkdir -p "$KDIR"
    for l in build source; do
        [[ -e /lib/modules/$ver/$l ]] || continue
        if [[ -e $KDIR/$l && ! -L $KDIR/$l ]]; then
            die "$KDIR/$l exists, is not a symlink and has no usable headers; not replacing it"
        fi
        ln -sfn "$(readlink -f "/lib/modules/$ver/$l")" "$KDIR/$l"
    done
}

# --- The image: Debian's headers as the fallback, in one tree -----------------------------
# A container compiles against the host's headers (/lib/modules and /usr/src mounted from the
# host). For a host without them the image carries Debian's, which the daemon uses, with the
# same warning as on a host, when /lib/modules/<release>/build has none: merged into one tree
# at $FALLBACK_HEADERS, since BCC_KERNEL_SOURCE names one directory where Debian splits the
# headers in -common and -<arch>; away from /usr/src, which the host's mount hides.
FALLBACK_HEADERS=/opt/kernel-headers
image_fallback_headers() {
    local meta ver karch
    meta=linux-headers-$(headers_flavour)
    apt_install "$meta"
    ver=$(debian_headers_version "$meta")
    [[ -n $ver ]] || die "installed $meta but found no /lib/modules/<version>/build with headers"
    rm -rf "$FALLBACK_HEADERS"
    mkdir -p "$FALLBACK_HEADERS"
    cp -a "$(readlink -f "/lib/modules/$ver/source")/." "$FALLBACK_HEADERS/"
    cp -a "$(readlink -f "/lib/modules/$ver/build")/." "$FALLBACK_HEADERS/"
    # The -common part holds every architecture's arch/ headers; BCC reads this kernel's only
    # (the one the -<arch> part has): ~20 MB less in the image.
    karch=$(ls "$(readlink -f "/lib/modules/$ver/build")/arch")
    find "$FALLBACK_HEADERS/arch" -mindepth 1 -maxdepth 1 ! -name "$karch" -exec rm -rf {} +
    # The headers' compiler and binutils go with them: apt would keep binutils, which
    # python3.11 suggests, without SuggestsImportant=false (~30 MB).
    apt-get purge -y -qq --auto-remove -o APT::AutoRemove::SuggestsImportant=false \
        "$meta" "linux-headers-$ver" >/dev/null
    say "fallback kernel headers: Debian's $ver in $FALLBACK_HEADERS"
}

if [[ $IN_IMAGE == 1 ]]; then
    image_fallback_headers
    apt-get clean
    rm -rf /var/lib/apt/lists/*
    say "image build (BOOTSTRAP_IN_IMAGE=1): skipping the host's kernel headers, mounts and" \
        ".venv; mount the host's /lib/modules, /usr/src and /sys/kernel/{tracing,debug} at run time"
    exit 0
fi

if ! headers_ok; then
    say "installing kernel headers for $KVER"
    apt_update_once
    if apt-cache show "linux-headers-$KVER" >/dev/null 2>&1; then
        apt_install "linux-headers-$KVER" || warn "apt-get install linux-headers-$KVER failed"
    fi
    if ! headers_ok; then
        meta=linux-headers-$(headers_flavour)
        if [[ -n $(missing_packages "$meta") ]]; then
            apt_install "$meta"
        fi
        debver=$(debian_headers_version "$meta")
        [[ -n $debver ]] || die "installed $meta but found no /lib/modules/<version>/build with headers"
        link_headers "$debver"
        headers_ok || die "linked $KDIR to Debian's $debver headers, but they are not usable"
    fi
fi
report_headers

# --- 3. tracefs and debugfs ---------------------------------------------------------------
mount_fs() {
    local type=$1 dir=$2
    if mountpoint -q "$dir"; then
        say "ok $type at $dir"
    elif [[ -d $dir ]] && mount -t "$type" "$type" "$dir"; then
        say "mounted $type at $dir"
    else
        warn "could not mount $type at $dir (kernel without $type, or no privilege to mount); kernel tests cannot run"
    fi
}
mount_fs tracefs /sys/kernel/tracing
mount_fs debugfs /sys/kernel/debug

# --- 4. .venv on Debian's python3 (sees Debian's bcc through --system-site-packages) ------
PIP_STAMP=.venv/.bootstrap-pip-stamp

# 0 = ready; 1 = needs pip install; other = missing or broken (recreate). Only locates the
# exporter package (-I: not from the cwd), never imports it: a broken exporter/ being edited
# must not make us rebuild the venv.
venv_state() {
    [[ -x .venv/bin/python ]] || return 2
    .venv/bin/python -I - "$ROOT" 2>/dev/null <<'EOF'
import importlib.util, os, sys
try:
    import bcc  # noqa: F401
except Exception:
    sys.exit(2)
spec = importlib.util.find_spec("exporter")
want = os.path.join(sys.argv[1], "exporter", "__init__.py")
ok = spec is not None and spec.origin is not None and os.path.samefile(spec.origin, want)
sys.exit(0 if ok and os.access(os.path.join(sys.prefix, "bin", "bcc_exporter"), os.X_OK) else 1)
EOF
}

state=0
venv_state || state=$?
if ((state >= 2)); then
    if [[ -e .venv ]]; then
        say "recreating .venv (broken, or bcc not importable in it)"
        rm -rf .venv
    else
        say "creating .venv"
    fi
    /usr/bin/python3 -m venv --system-site-packages .venv
    state=1
fi
if ((state == 1)) || [[ ! -e $PIP_STAMP || pyproject.toml -nt $PIP_STAMP ]]; then
    say "installing bcc_exporter into .venv (pip install -e '.[test]')"
    PIP_NO_INPUT=1 .venv/bin/python -m pip install -q -e '.[test]'
    state=0
    venv_state || state=$?
    case $state in
    0) touch "$PIP_STAMP" ;;
    2) die "bcc does not import in .venv: is python3-bpfcc installed for /usr/bin/python3?" ;;
    *) die "pip install -e '.[test]' did not leave exporter importable and .venv/bin/bcc_exporter" ;;
    esac
else
    say "ok .venv (bcc importable, bcc_exporter installed editable)"
fi

elapsed_ms=$(((${EPOCHREALTIME//[!0-9]/} - ${START//[!0-9]/}) / 1000))
say "ready in $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000)))s: .venv/bin/bcc_exporter"
