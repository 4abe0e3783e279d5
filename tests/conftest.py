"""Kernel tests skip without root/BPF but fail under REQUIRE_BPF=1: CI never passes by skipping.

Also the `daemon` and `write_config` fixtures: a real daemon on the real kernel, started on a
config, scraped and stopped (used by tests/kernel and tests/fault)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
KERNEL_DIRS = (REPO / "tests" / "kernel",)
# Fault and e2e tests run the daemon only in some files: those that do are kernel tests.
DAEMON_DIRS = (REPO / "tests" / "fault", REPO / "tests" / "e2e")


# Seconds a bcc tool or bpftrace may take to print and exit after SIGINT: a hang detector, not
# a speed limit (a few seconds on a quiet machine; bpftrace took over 30 once beside the busy
# neighbour of `make test-soak BUSY=1`).
TOOL_EXIT_SECONDS = 300
# Seconds the daemon may take to exit after SIGTERM before it is killed: a hang detector too
# (1.4 s on a quiet machine; its speed is bench/start.py's).
EXIT_SECONDS = 120


def _bpf_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/sys/kernel/btf/vmlinux").exists() and not Path("/proc/kallsyms").exists():
        return "no BPF-capable kernel"
    if not Path("/sys/kernel/tracing/events").is_dir():
        return "tracefs is not mounted at /sys/kernel/tracing"
    return None


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control hands what it starts in the background (`make test &`)
    # SIGINT ignored, and children inherit that: the bcc tools the tests stop with SIGINT, as a
    # user does, would never stop. A handler of our own is reset to the default across exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _traversable_tmp_path(request: pytest.FixtureRequest) -> None:
    """The daemon serves as an unprivileged user (nobody): it must reach what a test makes for
    it (uprobe targets, fake pod log trees), as a deployed one reaches /usr/bin or
    /var/log/pods. pytest makes its temporary directories 0700."""
    if "tmp_path" in request.fixturenames:
        path: Path = request.getfixturevalue("tmp_path")
        for directory in (path, path.parent, path.parent.parent):
            if directory.owner() == "root" and directory.parent != Path("/"):
                directory.chmod(directory.stat().st_mode | 0o055)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if any(path.is_relative_to(d) for d in KERNEL_DIRS) or (
            any(path.is_relative_to(d) for d in DAEMON_DIRS)
            and "daemon" in getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.kernel)


def cannot_run(reason: str) -> NoReturn:
    """A test's real check cannot run here (no BPF, a tool or headers missing): skip with the
    reason, or fail under REQUIRE_BPF=1 (CI, on a machine scripts/bootstrap.sh set up, where
    everything is there), so CI never passes by skipping the check."""
    if os.environ.get("REQUIRE_BPF") == "1":
        pytest.fail(f"REQUIRE_BPF=1 but this check cannot run: {reason}")
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is None:
        return
    reason = _bpf_unavailable()
    if reason is not None:
        cannot_run(reason)


GETPPID_COUNTER = """
programs:
  - name: %(program)s
    namespace: %(namespace)s
    code: |
      BPF_ARRAY(calls, u64, 1);
      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
          u32 zero = 0;
          calls.increment(zero);
          return 0;
      }
    metrics:
      counters:
        - name: %(metric)s
          help: getppid calls.
          map: calls
          labels:
            - {name: slot, size: 4, decoders: [{name: uint}]}
"""


def getppid_counter(
    program: str = "good", metric: str = "getppid_calls_total", namespace: str = "bcc"
) -> str:
    """A config known to compile: every getppid(2) of the machine, counted in one array slot."""
    return GETPPID_COUNTER % {"program": program, "metric": metric, "namespace": namespace}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`bcc_exporter ARGS` run to completion (config checks, list, bad input)."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bpftool_show(kind: str) -> list[dict[str, Any]]:
    """What the kernel holds: `bpftool -j KIND show` for prog, link or map."""
    out = subprocess.run(
        ["bpftool", "-j", kind, "show"], check=True, capture_output=True, text=True
    ).stdout
    return list(json.loads(out)) if out.strip() else []


def still_loaded(ids: set[int], kind: str, grace: float = 5) -> set[int]:
    """Which of the ids bpftool still shows after `grace` s: the kernel frees programs and
    links after an RCU grace period, so they may briefly outlive the fds that held them."""
    deadline = time.monotonic() + grace
    while True:
        left = ids & {entry["id"] for entry in bpftool_show(kind)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def status(pid: int | str, task: int | str | None = None) -> dict[str, str]:
    path = Path(f"/proc/{pid}/status" if task is None else f"/proc/{pid}/task/{task}/status")
    return dict(line.split(":\t", 1) for line in path.read_text().splitlines() if ":\t" in line)


def alive(pid: int) -> bool:
    try:
        return status(pid)["State"][0] != "Z"
    except FileNotFoundError:
        return False


def remove_cgroup(directory: Path) -> None:
    """rmdir a cgroup the test made (gone already is fine), waiting up to 5 s for the exit of a
    process in it to take it out of the cgroup: until then rmdir says EBUSY."""
    for _ in range(50):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
            time.sleep(0.1)
    directory.rmdir()


class Daemon:
    def __init__(self, args: list[str], log: Path, wait: bool = True) -> None:
        self.port = free_port()
        self.log_path = log
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            self.command(args),
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()

    def command(self, args: list[str]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "exporter",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *args,
        ]

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.get("/healthz")
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"daemon not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> bytes:
        """The body of GET `path`; `timeout` only tells a hung daemon from a slow one."""
        request = urllib.request.Request(self.url + path, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read())

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of /metrics, keyed by (sample name, labels)."""
        text = self.get("/metrics").decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def headers_checked(
        self, timeout: float = 60
    ) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """A scrape once the kernel-header check has its verdict. It runs in the background
        after start-up and logs when done (at once when its offsets are cached, ~2 s later
        when not): a test of what the daemon logs waits for it."""
        deadline = time.monotonic() + timeout
        while ("bcc_exporter_kernel_headers_match", frozenset()) not in (samples := self.scrape()):
            assert time.monotonic() < deadline, f"no header check verdict after {timeout} s"
            time.sleep(0.1)
        return samples

    def program_ids(self, program: str | None = None) -> set[int]:
        """Kernel ids of the BPF programs the daemon runs (of one program's config, if given)."""
        return {
            int(dict(labels)["id"])
            for (name, labels) in self.scrape()
            if name == "bcc_exporter_program_run_count_total"
            and program in (None, dict(labels)["program"])
        }

    def value(self, name: str, **labels: str) -> float:
        """One sample's value; 0 when the series does not exist (yet)."""
        return self.scrape().get((name, frozenset(labels.items())), 0.0)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[type[Daemon]]:
    """`daemon(*args)` starts a daemon and waits until it serves (`wait=False`: it does not)."""
    started: list[Daemon] = []

    def start(*args: str, wait: bool = True) -> Daemon:
        d = Daemon(list(args), tmp_path / f"daemon{len(started)}.log", wait=wait)
        started.append(d)
        return d

    yield start  # type: ignore[misc]
    for d in started:
        d.stop()


@pytest.fixture
def write_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        return path

    return write
