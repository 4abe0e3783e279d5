"""The runtime image as a user takes it: built from a checkout whose files a umask of 002 left
group-writable, run in the host's PID and network namespaces with the capabilities and mounts
the Dockerfile header gives for Debian's Docker 20.10, scraped, and measured. Opt-in
(`make test-image`, ~5 min the first time: it sets up Debian's docker.io and a debootstrapped
base, see scripts/image_host.sh and docs/testing.md)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import capabilities, config

from ..conftest import REPO, Daemon, status
from ..kernel import workload

pytestmark = pytest.mark.skipif(
    os.environ.get("BCC_EXPORTER_IMAGE_TEST") != "1",
    reason="opt-in: `make test-image` builds and runs the image (docs/testing.md)",
)

IMAGE = "bcc_exporter:image-test"
MAX_BYTES = 450_000_000  # as `docker images` counts: 450 MB
# The host paths the Dockerfile header and docs/deploying.md say to mount.
MOUNTS = [
    "/lib/modules:/lib/modules:ro",
    "/usr/src:/usr/src:ro",
    "/sys/kernel/tracing:/sys/kernel/tracing:ro",
    "/sys/kernel/debug:/sys/kernel/debug:ro",
    "/sys/fs/cgroup:/sys/fs/cgroup:ro",
]
# Docker before 23 knows no CAP_BPF/CAP_PERFMON: the header's set for it, less what this
# machine's bounding set lacks (a sandbox without CAP_SYS_RESOURCE cannot grant it, nor run
# --privileged: runc refuses "unable to apply caps"; kernels >= 5.11 do not need it).
# SETUID, SETGID: the serving process becomes nobody:nogroup (docs/security.md).
DOCKER_20_CAPS = ["SYS_ADMIN", "SYS_RESOURCE", "SYSLOG", "SETUID", "SETGID"]
# What a checkout holds that the build context must not (wheelhouse/ it must).
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache"
)


def _volumes(mounts: list[str]) -> list[str]:
    return [arg for mount in mounts for arg in ("-v", mount)]


def _privileges() -> list[str]:
    bounding = capabilities.from_mask(int(status("self")["CapBnd"], 16))
    grantable = [c for c in DOCKER_20_CAPS if capabilities.NUMBERS[f"CAP_{c}"] in bounding]
    return [
        "--cap-drop=ALL",
        *(f"--cap-add={c}" for c in grantable),
        "--security-opt",
        "seccomp=unconfined",
    ]


@pytest.fixture(scope="module")
def docker() -> str:
    """Debian's docker client, with dockerd running and the base image in place."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "image_host.sh")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


@pytest.fixture(scope="module")
def image(docker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    context = tmp_path_factory.mktemp("context") / "bcc_exporter"
    shutil.copytree(REPO, context, symlinks=True, ignore=NOT_SOURCE)
    for path in [context, *context.rglob("*")]:
        if not path.is_symlink():
            path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWGRP)  # umask 002
    assert any(REPO.glob("wheelhouse/*.whl")), "no wheelhouse/: run `make wheelhouse` first"
    built = subprocess.run(
        [docker, "build", "--network", "host", "-t", IMAGE, str(context)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    yield IMAGE


class Container(Daemon):
    """The daemon of the image, run in the foreground by `docker run`: the client passes
    SIGTERM on to it and exits with its status."""

    docker = ""

    def command(self, args: list[str]) -> list[str]:
        return [
            self.docker,
            "run",
            "--rm",
            "--pid=host",
            "--network=host",
            *_privileges(),
            *_volumes(MOUNTS),
            IMAGE,
            f"--web.listen-address=127.0.0.1:{self.port}",
            *args,
        ]


def test_the_image_is_at_most_450_mb(
    docker: str, image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    size = int(
        subprocess.run(
            [docker, "image", "inspect", "-f", "{{.Size}}", image],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    with capsys.disabled():
        print(f"\n{image}: {size / 1e6:.0f} MB (limit {MAX_BYTES / 1e6:.0f} MB)")
    assert size <= MAX_BYTES


def test_no_file_of_the_exporter_or_headers_is_writable_by_group_or_others(
    docker: str, image: str
) -> None:
    found = subprocess.run(
        [docker, "run", "--rm", "--entrypoint", "find", image]
        + ["/opt/bcc_exporter", "/opt/kernel-headers", "!", "-type", "l", "-perm", "/022"],
        capture_output=True,
        text=True,
    )
    assert (found.returncode, found.stdout) == (0, "")


def test_the_image_serves_every_default_program_and_counts_exactly(
    docker: str, image: str, tmp_path: Path
) -> None:
    Container.docker = docker
    exporter = Container([], tmp_path / "container.log", wait=False)
    try:
        exporter.wait_ready(timeout=180)
        default_set = [spec.name for spec in config.select(None, None, [])]
        enabled = {
            name: exporter.value("bcc_exporter_enabled_programs", program=name)
            for name in default_set
        }
        assert enabled == dict.fromkeys(default_set, 1.0), exporter.log()

        comm = workload.unique_comm()
        workload.run(comm, "for _ in range(23):\n    os.close(os.open('/etc/hostname', 0))\n")
        assert exporter.value("bcc_opens_total", comm=comm, result="ok") == 23
    finally:
        code = exporter.stop()
    assert code == 0, exporter.log()
    assert "stopped; every program detached" in exporter.log()


def test_the_check_compiles_against_the_image_headers_without_the_hosts(
    docker: str, image: str
) -> None:
    checked = subprocess.run(
        [docker, "run", "--rm", "--pid=host", "--network=host", *_privileges()]
        + _volumes([m for m in MOUNTS if not m.startswith(("/lib/modules", "/usr/src"))])
        + [image, "--config.check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    default_set = [spec.name for spec in config.select(None, None, [])]
    assert checked.stdout.splitlines() == [f"OK   {name}" for name in default_set]
    assert "compiling against the fallback headers at /opt/kernel-headers" in checked.stderr
