"""`python -m bench --only X` rewrites docs/BENCHMARKS.md with X's sections in their place and
the others kept from the earlier run."""

from __future__ import annotations

from pathlib import Path

from bench.__main__ import earlier_sections, report
from bench.common import Section, Table


def test_an_only_run_replaces_its_sections_and_keeps_the_others(tmp_path: Path):
    out = tmp_path / "BENCHMARKS.md"
    old_start = Section("Start", "old method", [Table(["a"], [["**FAIL**"]])], failed_targets=1)
    scrape = Section("Scrape", "scrape method", [Table(["b"], [["pass"]])])
    rss = Section("RSS", "rss method", [Table(["c"], [["**FAIL**"]])], failed_targets=1)
    out.write_text(report([scrape, old_start, rss], quick=False))
    new_start = Section("Start", "new method", [Table(["a"], [["pass"]])])

    text = report([new_start], False, earlier_sections(out), ["start"])

    titles = [line for line in text.splitlines() if line.startswith("## ")]
    assert titles == ["## Scrape", "## Start", "## RSS"]
    assert "new method" in text and "old method" not in text
    assert "Targets not met: RSS." in text
    assert "This run measured only `--only start`" in text
    assert earlier_sections(tmp_path / "absent.md") == []
