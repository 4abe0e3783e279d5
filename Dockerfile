# bcc_exporter image: Debian bookworm, Debian's bcc, the exporter in a venv on /usr/bin/python3.
#
# BPF needs the host kernel, so run it privileged in the host's PID and network namespaces,
# with the host's kernel headers (the /lib/modules/<ver>/build links point into /usr/src) and
# tracefs/debugfs:
#
#   docker build -t bcc_exporter .
#   docker run --rm --privileged --pid=host --network=host \
#     -v /lib/modules:/lib/modules:ro -v /usr/src:/usr/src:ro \
#     -v /sys/kernel/tracing:/sys/kernel/tracing -v /sys/kernel/debug:/sys/kernel/debug \
#     bcc_exporter            # metrics on :9474
#
# A host without headers for its kernel gets the image's (Debian's, in /opt/kernel-headers),
# with the same warning as on bare metal: they compile tracepoint programs, but their struct
# layouts may not be the kernel's (see docs/operations.md, "Kernel headers").
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

WORKDIR /opt/bcc_exporter

# Debian packages: the same list and logic as a host bootstrap. BOOTSTRAP_IN_IMAGE=1 stops
# after the packages and the fallback headers (no mounts or .venv) and empties the apt lists.
# Copied alone so this layer survives source changes.
COPY scripts/bootstrap.sh scripts/bootstrap.sh
RUN BOOTSTRAP_IN_IMAGE=1 bash scripts/bootstrap.sh

# The whole tree stays at /opt/bcc_exporter: the built-in config/ and programs/ live beside
# the package, which finds them from its own location, so the install is editable (as in
# deploy/systemd/bcc_exporter.service). No test extras.
COPY . .
RUN /usr/bin/python3 -m venv --system-site-packages .venv \
    && .venv/bin/pip install -e . \
    && .venv/bin/python -I -c 'import bcc, exporter' \
    && test -x .venv/bin/bcc_exporter

ENV PATH=/opt/bcc_exporter/.venv/bin:$PATH \
    BCC_EXPORTER_FALLBACK_HEADERS=/opt/kernel-headers
EXPOSE 9474
ENTRYPOINT ["bcc_exporter"]
