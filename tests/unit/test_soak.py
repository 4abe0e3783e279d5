"""scripts/soak.py's bookkeeping: failures read from pytest's JUnit XML, and the busy neighbour
started and stopped."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("soak", REPO / "scripts" / "soak.py")
assert spec is not None and spec.loader is not None
soak = importlib.util.module_from_spec(spec)
sys.modules["soak"] = soak  # dataclasses look their module up
spec.loader.exec_module(soak)

FAILING = """
def test_passes():
    pass

def test_fails():
    assert False

class TestGroup:
    def test_errs(self, missing_fixture):
        pass
"""


def test_failures_are_read_from_junit_xml(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(FAILING)
    junit = tmp_path / "run.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    tests, failed = soak.read_junit(junit)
    assert tests == 3
    assert failed == ["test_sample.py::test_fails", "test_sample.py::TestGroup::test_errs"]
    assert soak.read_junit(tmp_path / "none.xml") == (0, [])  # killed before pytest wrote it


def test_report_names_each_failure_with_its_runs(tmp_path: Path) -> None:
    runs = [
        soak.Run(1, 300.4, 1, 1000, ["tests/kernel/test_a.py::test_x"]),
        soak.Run(2, 290.0, 0, 1000, []),
        soak.Run(3, 3600.0, -1, 0, []),
        soak.Run(4, 310.0, 1, 1000, ["tests/kernel/test_a.py::test_x", "tests/e2e/b.py::test_y"]),
    ]
    text = soak.report(runs, True, tmp_path)
    assert text.splitlines() == [
        "soak: 4 runs of tests/kernel tests/fault tests/e2e beside a busy neighbour",
        "  run  1: 1000 tests, 300 s, exit 1, 1 failed",
        "  run  2: 1000 tests, 290 s, passed",
        f"  run  3: 0 tests, 3600 s, killed after {soak.RUN_TIMEOUT} s",
        "  run  4: 1000 tests, 310 s, exit 1, 2 failed",
        "failed at least once:",
        "  tests/e2e/b.py::test_y: 1/4 (runs [4])",
        "  tests/kernel/test_a.py::test_x: 2/4 (runs [1, 4])",
        f"logs and JUnit XML: {tmp_path}",
    ]
    assert soak.report(runs[1:2], False, tmp_path).splitlines()[-2] == "no test failed"


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def test_busy_neighbour_runs_until_the_block_ends(tmp_path: Path) -> None:
    with soak.busy_neighbour(tmp_path):
        started = children(os.getpid())
        assert len(started) == 3
        assert len(list(tmp_path.glob("soak-direct-io.*"))) == 1  # the writer's file
    assert not children(os.getpid()) & started  # killed and reaped
    assert not list(tmp_path.glob("soak-direct-io.*"))
