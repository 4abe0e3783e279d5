"""docs/bpftrace.md's table of one-liners holds: each script translates into the metrics the
table names, and all of them compile and attach on this kernel."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from exporter.config import load

from ..conftest import REPO, run_cli

# A row whose script starts with a probe type: `tracepoint:...`, `uretprobe:...`, ...
ROW = re.compile(r"^\| `(?P<script>[a-z]+:[^`]+)` \| (?P<metrics>.*) \|$")


def one_liners() -> list[tuple[str, set[str]]]:
    rows = []
    for line in (REPO / "docs" / "bpftrace.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            names = re.findall(r"`(bcc_x\w*)", match.group("metrics"))
            rows.append((match.group("script"), set(names)))
    return rows


def program(name: str, script: str) -> dict[str, str]:
    return {"name": name, "bpftrace": script}


def test_each_one_liner_makes_the_metrics_the_table_names(tmp_path: Path) -> None:
    rows = one_liners()
    assert len(rows) >= 24
    for script, names in rows:
        path = tmp_path / "x.yaml"
        path.write_text(yaml.safe_dump({"programs": [program("x", script)]}))
        (spec,) = load([path])
        made = {f"bcc_{m.name}" for m in spec.program.metrics.all()}
        assert made == names, script


def test_every_one_liner_compiles_and_attaches(tmp_path: Path) -> None:
    programs = [program(f"x{i}", script) for i, (script, _) in enumerate(one_liners())]
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump({"programs": programs}))
    done = run_cli("--config.check", f"--config.file={path}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("OK   x") == len(programs)
