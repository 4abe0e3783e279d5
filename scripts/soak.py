#!/usr/bin/env python3
"""Run the kernel, fault and e2e suites N times in a row and report every test that failed at
least once (`make test-soak N=20 [BUSY=1]`).

    .venv/bin/python scripts/soak.py --runs 20            # 20 runs on the machine as it is
    .venv/bin/python scripts/soak.py --runs 20 --busy     # beside a busy neighbour

A flaky test fails one run in N: one full run cannot tell it from a good one, N in a row can.
`--busy` runs them beside what a shared CI machine runs beside them: two loops of system calls
(`dd bs=1` between /dev/zero and /dev/null: a read and a write per byte) and a direct-I/O writer
(`dd oflag=direct` rewriting a file on the disk of --busy-dir), stopped when the runs end.

Each run writes a JUnit XML file into --out; the report names each failing test with the runs it
failed in, and the times of every run. Exit status 0 only when every run passed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITES = ("tests/kernel", "tests/fault", "tests/e2e")
# A run that takes this long has hung (a full run takes ~5 min): it counts as a failed run.
RUN_TIMEOUT = 3600
WRITER_MB = 64  # each pass of the direct-I/O writer rewrites a file of this size


@dataclass
class Run:
    number: int
    seconds: float
    status: int  # pytest's exit status; -1: killed after RUN_TIMEOUT
    tests: int = 0
    failed: list[str] = field(default_factory=list)  # failures and errors, as test ids


def test_id(case: ET.Element) -> str:
    """tests/kernel/test_x.py::test_y from a JUnit testcase (classname tests.kernel.test_x)."""
    module, _, cls = case.get("classname", "").partition(".Test")
    path = module.replace(".", "/") + ".py"
    return f"{path}::{'Test' + cls + '::' if cls else ''}{case.get('name')}"


def read_junit(path: Path) -> tuple[int, list[str]]:
    """(tests run, ids of those that failed or errored) of one run's JUnit XML."""
    if not path.exists():
        return 0, []
    cases = ET.parse(path).getroot().iter("testcase")
    tests, failed = 0, []
    for case in cases:
        tests += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(test_id(case))
    return tests, failed


def run_once(number: int, out: Path, pytest_args: list[str]) -> Run:
    junit = out / f"run-{number:02d}.xml"
    log = out / f"run-{number:02d}.log"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    command += [*SUITES, *pytest_args]
    started = time.monotonic()
    with log.open("wb") as output:
        proc = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
        try:
            status = proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status = -1
    tests, failed = read_junit(junit)
    return Run(number, time.monotonic() - started, status, tests, failed)


NEIGHBOUR = {
    "syscalls-1": "exec dd if=/dev/zero of=/dev/null bs=1 status=none",
    "syscalls-2": "exec dd if=/dev/zero of=/dev/null bs=1 status=none",
    "direct-io": "while :; do dd if=/dev/zero of={file} bs=1M count={mb} oflag=direct "
    "conv=fsync status=none || exit 1; done",
}


@contextmanager
def busy_neighbour(directory: Path) -> Iterator[None]:
    """The neighbour's three loops, each its own process group, killed on the way out (with the
    file the writer rewrites)."""
    file = directory / f"soak-direct-io.{os.getpid()}"
    procs = []
    try:
        for name, script in NEIGHBOUR.items():
            command = script.format(file=shlex.quote(str(file)), mb=WRITER_MB)
            procs.append((name, subprocess.Popen(["bash", "-c", command], start_new_session=True)))
        time.sleep(1)
        for name, proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"soak: the busy neighbour's {name} exited {proc.returncode}")
        yield
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        file.unlink(missing_ok=True)


def report(runs: list[Run], busy: bool, out: Path) -> str:
    lines = [f"soak: {len(runs)} runs of {' '.join(SUITES)}{' beside a busy neighbour' * busy}"]
    for run in runs:
        verdict = {0: "passed", -1: f"killed after {RUN_TIMEOUT} s"}.get(run.status)
        verdict = verdict or f"exit {run.status}, {len(run.failed)} failed"
        lines.append(f"  run {run.number:2d}: {run.tests} tests, {run.seconds:.0f} s, {verdict}")
    failures: dict[str, list[int]] = {}
    for run in runs:
        for test in run.failed:
            failures.setdefault(test, []).append(run.number)
    if failures:
        lines.append("failed at least once:")
        for test, numbers in sorted(failures.items()):
            lines.append(f"  {test}: {len(numbers)}/{len(runs)} (runs {numbers})")
    else:
        lines.append("no test failed")
    lines.append(f"logs and JUnit XML: {out}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20, help="runs in a row (default 20)")
    parser.add_argument("--busy", action="store_true", help="beside a busy neighbour")
    parser.add_argument(
        "--busy-dir",
        type=Path,
        default=Path("/var/tmp"),
        help="where the direct-I/O writer writes (a disk, not tmpfs)",
    )
    parser.add_argument("--out", type=Path, help="directory for logs and JUnit XML")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    out = args.out or Path(tempfile.mkdtemp(prefix="bcc_exporter-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    with busy_neighbour(args.busy_dir) if args.busy else nullcontext():
        for number in range(1, args.runs + 1):
            runs.append(run_once(number, out, args.pytest_args))
            run = runs[-1]
            failed = f", failed: {' '.join(run.failed)}" if run.failed else ""
            print(f"soak: run {number}/{args.runs}: {run.seconds:.0f} s{failed}", flush=True)
    text = report(runs, args.busy, out)
    (out / "report.txt").write_text(text + "\n")
    print(text)
    return 0 if all(run.status == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
