"""docs/v1-compat.md: every row of its tables cites at least one test, and each cited test
exists, so that the table cannot promise what nothing checks."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "v1-compat.md"
CITED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def rows() -> list[str]:
    """The body rows of every table (not the header and separator lines)."""
    lines = DOC.read_text().splitlines()
    return [
        line
        for i, line in enumerate(lines)
        if line.startswith("|")
        and not line.startswith("| ---")
        and not (i + 1 < len(lines) and lines[i + 1].startswith("| ---"))
    ]


def test_the_doc_has_its_tables() -> None:
    assert len(rows()) >= 30


@pytest.mark.parametrize("row", rows(), ids=lambda row: row.split("|")[1].strip()[:40])
def test_every_row_cites_existing_tests(row: str) -> None:
    tests = CITED.findall(row.split("|")[-2])
    assert tests, f"no test cited: {row}"
    for path, name in tests:
        source = (REPO / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name} does not exist"
