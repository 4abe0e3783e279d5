"""What every benchmark shares: options, result tables, the daemon under test, /proc readings."""

from __future__ import annotations

import math
import os
import platform
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from exporter.config import select
from tests.conftest import REPO, Daemon

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
QUICK_PROGRAMS = ["syscalls", "opens"]
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    quick: bool  # tiny counts: checks that everything runs, figures mean nothing
    workdir: Path  # scratch space for logs, configs and compiled workloads
    programs: list[str]  # the programs of "the default config"
    config: list[str]  # the daemon arguments that load them

    @classmethod
    def make(cls, quick: bool, workdir: Path) -> Options:
        """With --quick, "the default config" is two small programs (the full set takes 10 s
        or more to start); otherwise the built-in set, read now so a broken config stops the
        bench before it starts (ConfigError)."""
        if quick:
            return cls(
                quick, workdir, QUICK_PROGRAMS, [f"--config.names={','.join(QUICK_PROGRAMS)}"]
            )
        return cls(quick, workdir, [spec.name for spec in select(None, None, [])], [])

    def pick(self, full: T, quick: T) -> T:
        return quick if self.quick else full


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Section:
    title: str
    method: str  # how the figures were obtained, in a sentence or two
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    failed_targets: int = 0

    def markdown(self) -> str:
        parts = [f"## {self.title}", self.method, *(t.markdown() for t in self.tables)]
        parts += [f"- {note}" for note in self.notes]
        return "\n\n".join(parts)


def verdict(section: Section, ok: bool) -> str:
    """'pass' or a loud 'FAIL', counted in the section."""
    if not ok:
        section.failed_targets += 1
    return "pass" if ok else "**FAIL**"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p99(values: Sequence[float]) -> float:
    """Nearest-rank 99th percentile: with fewer than 100 samples, the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return f"{os.cpu_count()} cores, {model}, kernel {platform.release()}"


def complete(body: bytes, programs: list[str]) -> bool:
    """Every program was loaded and collected (or skipped: this kernel lacks its probes)."""
    text = body.decode()
    return all(
        f'bcc_exporter_collect_success{{program="{p}"}} 1.0' in text
        or f'bcc_exporter_enabled_programs{{program="{p}"}} 0.0' in text
        for p in programs
    )


class BenchDaemon(Daemon):
    """The test suite's daemon (tests/conftest.py), plus its processes and their /proc figures.

    With privilege separation the daemon is two processes: the server (the process started
    here) and the privileged spawner, its child, which starts the compile workers."""

    def spawner_pid(self) -> int:
        for child in children(self.proc.pid):
            if b"exporter.privsep" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        raise RuntimeError(f"daemon {self.proc.pid} has no spawner process")

    def processes(self) -> dict[str, int]:
        return {"server": self.proc.pid, "spawner": self.spawner_pid()}


@contextmanager
def daemon(opts: Options, name: str, *args: str, wait: bool = True) -> Iterator[BenchDaemon]:
    """A daemon with `args`, logging to WORKDIR/NAME.log, stopped on exit."""
    d = BenchDaemon(list(args), opts.workdir / f"{name}.log", wait=wait)
    try:
        yield d
    finally:
        d.stop()


def wait_complete(d: BenchDaemon, programs: list[str], timeout: float = 120) -> bytes:
    """Scrape until every program is collected; returns that first complete scrape."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.proc.poll() is not None:
            raise RuntimeError(f"daemon exited {d.proc.returncode}:\n{d.log()[-2000:]}")
        try:
            body = d.get("/metrics")
            if complete(body, programs):
                return body
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"no complete scrape after {timeout} s:\n{d.log()[-2000:]}")


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, every thread (dead ones too), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def status_mb(pid: int, key: str) -> float:
    """A size from /proc/PID/status (VmRSS, VmHWM, ...) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages split between the processes mapping them."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is not installed (make setup installs it)")
    return path


def compile_workloads(opts: Options) -> Path:
    """bench/loops.c, built once per run."""
    binary = opts.workdir / "loops"
    if not binary.exists():
        subprocess.run(
            [require("gcc"), "-O2", "-Wall", "-o", str(binary), str(REPO / "bench" / "loops.c")],
            check=True,
        )
    return binary


class LogClock:
    """Stamps each line the daemon writes to its log with when it appeared (the log's own
    timestamps have one-second resolution); polled every 5 ms."""

    def __init__(self, path: Path, started: float) -> None:
        self.lines: list[tuple[float, str]] = []
        self._path, self._started = path, started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        pending = ""
        while not self._path.exists():
            time.sleep(0.005)
        with self._path.open(errors="replace") as log:
            while True:
                chunk = log.read()
                now = time.monotonic() - self._started
                pending += chunk
                *done, pending = pending.split("\n")
                self.lines += [(now, line) for line in done]
                if self._stop.is_set() and not chunk:
                    return
                time.sleep(0.005)

    def stop(self) -> list[tuple[float, str]]:
        self._stop.set()
        self._thread.join()
        return self.lines
