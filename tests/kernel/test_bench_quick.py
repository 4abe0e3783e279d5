"""`python -m bench --quick` still runs every benchmark end to end (figures mean nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import REPO


def test_bench_quick_runs_every_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", f"--out={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text()
    for title in (
        "Kernel overhead per event",
        "In-kernel run time of every default program",
        "BTF field reads per event",
        "Daemon memory",
        "Start to first complete scrape",
        "Start-up memory whatever the CPU count",
        "One-program start, side by side with ebpf_exporter v1.2.5",
        "Scrape cost",
        "CPU per scrape and idle CPU",
    ):
        assert f"## {title}" in report
    assert "| `syscalls` (getpid(2)) |" in report  # --quick measures its first case only
    assert "nan" not in report
