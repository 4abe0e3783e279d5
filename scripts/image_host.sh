#!/usr/bin/env bash
# Make this Debian machine able to build and run the image, for `make test-image`:
#   - Debian's docker.io (and debootstrap), installed when missing;
#   - dockerd, started when not running, without a bridge or iptables rules (containers use
#     the host's network: `docker build --network host`, `docker run --network=host`);
#   - the Dockerfile's base, debian:bookworm-slim, made by debootstrap, slimmed as the real one
#     is and `docker import`ed under that name when no image of that name exists (where no
#     registry can be pulled from). BCC_EXPORTER_REMAKE_BASE=1 makes it again.
# Idempotent; must run as root. Prints the docker client to use on its last line.
set -euo pipefail

BASE=debian:bookworm-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DOCKER=/usr/bin/docker # Debian's client, not whatever else is first on PATH
DOCKERD_LOG=/var/log/bcc_exporter-test-dockerd.log

say() { echo "image_host: $*" >&2; }
die() {
    echo "image_host: ERROR: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, starts dockerd)"

missing=()
for pkg in docker.io debootstrap; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

if ! "$DOCKER" info >/dev/null 2>&1; then
    say "starting dockerd --bridge=none --iptables=false (log: $DOCKERD_LOG)"
    setsid dockerd --bridge=none --iptables=false >"$DOCKERD_LOG" 2>&1 </dev/null &
    for _ in $(seq 100); do
        "$DOCKER" info >/dev/null 2>&1 && break
        sleep 0.3
    done
    "$DOCKER" info >/dev/null 2>&1 || die "dockerd did not start; see $DOCKERD_LOG"
fi

if [[ ${BCC_EXPORTER_REMAKE_BASE:-0} == 1 ]] || ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    root=$(mktemp -d /var/tmp/bookworm.XXXXXX)
    say "making $BASE with debootstrap (minbase, $MIRROR) in $root"
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >&2
    # Slim as debian:bookworm-slim is (debuerreotype's slimify): no docs but copyrights, man
    # pages, info or translations, now and for every package installed on top of it.
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    rm -rf "$root"/usr/share/{groff,info,linda,lintian/overrides,locale,man}/*
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    tar -C "$root" -c . | "$DOCKER" import - "$BASE" >&2
    rm -rf "$root"
fi
echo "$DOCKER"
