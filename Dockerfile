# bcc_exporter runtime image: Debian bookworm, Debian's bcc (python3-bpfcc), Debian's kernel
# headers as the fallback, and the exporter (a wheel, its built-in programs inside) in a venv
# on /usr/bin/python3. No test tools. See docs/deploying.md, "Container".
#
#   make wheelhouse                  # optional: Python wheels for an offline build (wheelhouse/)
#   docker build -t bcc_exporter .   # or: podman build -t bcc_exporter .
#
# BPF needs the host kernel: run it in the host's PID and network namespaces, with the host's
# kernel headers (the /lib/modules/<release>/build links point into /usr/src), tracefs and
# debugfs, and the host's cgroup tree (pod and cgroup labels). Metrics on :9474.
#
# Docker 23 and later, Podman (capabilities by name, kernel >= 5.8):
#   docker run -d --name bcc_exporter --pid=host --network=host \
#     --cap-drop=ALL --cap-add=BPF --cap-add=PERFMON --cap-add=SYS_RESOURCE \
#     --cap-add=SYSLOG --cap-add=SETUID --cap-add=SETGID --security-opt seccomp=unconfined \
#     -v /lib/modules:/lib/modules:ro -v /usr/src:/usr/src:ro \
#     -v /sys/kernel/tracing:/sys/kernel/tracing:ro -v /sys/kernel/debug:/sys/kernel/debug:ro \
#     -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
#     bcc_exporter
#   (Podman: `podman run` as root, the same flags; rootless containers cannot load BPF)
#
# Docker before 23 (Debian 12's docker.io is 20.10) does not know CAP_BPF or CAP_PERFMON
# ("invalid CapAdd: unknown capability"): give CAP_SYS_ADMIN instead of both, or --privileged:
#   docker run -d --name bcc_exporter --pid=host --network=host \
#     --cap-drop=ALL --cap-add=SYS_ADMIN --cap-add=SYS_RESOURCE \
#     --cap-add=SYSLOG --cap-add=SETUID --cap-add=SETGID --security-opt seccomp=unconfined \
#     -v ... (the same mounts) \
#     bcc_exporter
#
# A host without headers for its kernel gets the image's (Debian's, in /opt/kernel-headers),
# with the same warning as on bare metal: they compile tracepoint programs, but their struct
# layouts may not be the kernel's (see docs/operations.md, "Kernel headers").
#
# USER stays root: the daemon needs capabilities to load programs, and the process serving
# HTTP becomes nobody:nogroup with none left (privilege separation, docs/security.md): hence
# SETUID and SETGID in the capability lists above.

# --- build: the wheel and its dependencies into a venv --------------------------------------
FROM debian:bookworm-slim AS build

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

RUN apt-get update -qq \
    && apt-get install -y -q --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*

# The build context is what .dockerignore lets in: the package, its built-in programs, the
# bootstrap script and wheelhouse/ (empty unless `make wheelhouse` filled it).
COPY . /src
# With wheels in wheelhouse/ nothing is fetched (air-gapped hosts; and on a host whose
# containers cannot verify the package index's certificate); without, pip uses the index.
# Modes are fixed here whatever the checkout's umask was: the daemon refuses configs and
# sources that group or others can write, and the final stage copies these files as they are.
RUN /usr/bin/python3 -m venv --system-site-packages /opt/bcc_exporter \
    && if ls /src/wheelhouse/*.whl >/dev/null 2>&1; then \
           offline="--no-index --find-links /src/wheelhouse"; \
       fi \
    && /opt/bcc_exporter/bin/pip install -q $offline /src \
    && /opt/bcc_exporter/bin/pip uninstall -q -y pip setuptools \
    && find /opt/bcc_exporter -name __pycache__ -prune -exec rm -rf {} + \
    && chmod -R go-w /opt/bcc_exporter

# --- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive

# Debian's bcc and the fallback headers: the runtime part of the host bootstrap's package list
# (BOOTSTRAP_IN_IMAGE=1 also empties the apt lists and purges the headers' compiler).
COPY scripts/bootstrap.sh /tmp/bootstrap.sh
RUN BOOTSTRAP_IN_IMAGE=1 bash /tmp/bootstrap.sh \
    && rm /tmp/bootstrap.sh \
    && chmod -R go-w /opt/kernel-headers

COPY --from=build /opt/bcc_exporter /opt/bcc_exporter
RUN /opt/bcc_exporter/bin/python -I -c 'import bcc, exporter' \
    && test -x /opt/bcc_exporter/bin/bcc_exporter

ENV PATH=/opt/bcc_exporter/bin:$PATH \
    BCC_EXPORTER_FALLBACK_HEADERS=/opt/kernel-headers
WORKDIR /
EXPOSE 9474
ENTRYPOINT ["bcc_exporter"]
