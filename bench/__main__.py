"""`python -m bench [--quick] [--only a,b] [--out FILE]`: run the benchmarks, write Markdown.

Not a test: figures, each with its target and pass/fail. `--quick` runs tiny counts to check
that everything still works and writes to a temporary file unless --out is given."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from exporter.errors import ConfigError

from . import btf, cpu, events, peer, rss, scrape, soak, start
from .common import REPO, Options, Section, machine

BENCHMARKS: dict[str, Callable[[Options], list[Section]]] = {
    "events": events.run,
    "btf": btf.run,
    "rss": rss.run,
    "start": start.run,
    "scrape": scrape.run,
    "cpu": cpu.run,
    "peer": peer.run,
    "soak": soak.run,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts; figures mean nothing")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma list of benchmarks")
    parser.add_argument(
        "--out", type=Path, help="default: docs/BENCHMARKS.md (--quick: a temp file)"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    with tempfile.TemporaryDirectory(prefix="bcc_exporter_bench.") as scratch:
        try:
            sections = run(chosen, Options.make(args.quick, Path(scratch)))
        except (ConfigError, RuntimeError, subprocess.CalledProcessError) as err:
            print(f"bench: error: {err}", file=sys.stderr)
            return 1
        out = args.out or (
            Path(scratch).parent / "bcc_exporter_bench_quick.md"
            if args.quick
            else REPO / "docs" / "BENCHMARKS.md"
        )
        kept = [] if args.quick or set(chosen) == set(BENCHMARKS) else earlier_sections(out)
        out.write_text(report(sections, args.quick, kept, chosen))
    failed = sum(s.failed_targets for s in sections)
    print(f"bench: wrote {out}; {failed} target(s) not met", file=sys.stderr)
    return 0


def run(chosen: list[str], opts: Options) -> list[Section]:
    sections: list[Section] = []
    for name in chosen:
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        sections += BENCHMARKS[name](opts)
        print(f"bench: {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return sections


def earlier_sections(path: Path) -> list[tuple[str, str]]:
    """(title, markdown) of each section of an earlier report, for an --only run to keep the
    ones it does not measure (its own replace theirs)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    found = []
    for part in text.split("\n## ")[1:]:
        title = part.split("\n", 1)[0]
        found.append((title, "## " + part.rstrip("\n")))
    return found


def report(
    sections: list[Section],
    quick: bool,
    kept: Sequence[tuple[str, str]] = (),
    chosen: Sequence[str] = (),
) -> str:
    """The report of `sections`; `kept`: sections of an earlier run that these do not replace,
    kept in their place (each says it comes from an earlier run)."""
    date = time.strftime("%Y-%m-%d %H:%M")
    head = [
        "# Benchmarks",
        "Written by `make bench` (`python -m bench`, see bench/); not edited by hand. "
        f"Machine: {machine()}. Date: {date}.",
    ]
    if quick:
        head.append("**`--quick` run: tiny counts, the figures mean nothing.**")
    new = {s.title: s for s in sections}
    parts: list[tuple[str, str, bool]] = []  # title, markdown, target missed
    for title, markdown in kept:
        if title in new:
            section = new.pop(title)
            parts.append((title, section.markdown(), section.failed_targets > 0))
        else:
            parts.append((title, markdown, "**FAIL**" in markdown))
    parts += [(s.title, s.markdown(), s.failed_targets > 0) for s in new.values()]
    if kept:
        head.append(
            f"This run measured only `--only {','.join(chosen)}`: the other sections are from "
            "the earlier run this file held."
        )
    missed = [title for title, _, failed in parts if failed]
    head.append("Targets not met: " + ", ".join(missed) + "." if missed else "Every target is met.")
    return "\n\n".join(head + [markdown for _, markdown, _ in parts]) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
