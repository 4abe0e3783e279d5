"""`bcc_exporter snapshot NAME`: one program's metrics over a window, printed the way
bcc-tools print them: log2 histograms as `usecs : count distribution` bars, counters as a
table sorted by count; a bpftrace program's maps as bpftrace prints them
(exporter/bpftrace/output.py). The same config that feeds Prometheus, for a quick look on a
node."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .bpftrace import output as bpftrace_output
from .bpftrace.output import Samples
from .config.models import Program
from .terminal import printable

if TYPE_CHECKING:
    from prometheus_client.core import Metric

BAR_WIDTH = 40


def samples(families: Iterable[Metric]) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def report(program: Program, families: list[Metric], before: Samples) -> str:
    """The window of the program: a bpftrace program's as bpftrace prints its maps."""
    metrics = program.metrics.all()
    if any(metric.bpftrace for metric in metrics):
        maps = bpftrace_output.printed_maps(program.namespace, metrics, families, before)
        return bpftrace_output.render(maps)
    return render(families, before)


def render(families: list[Metric], before: Samples) -> str:
    """Each family's change since `before` (gauges as they are now)."""
    out = []
    for family in families:
        now = samples([family])
        if family.type == "gauge":
            delta = now
        else:
            delta = {key: value - before.get(key, 0.0) for key, value in now.items()}
        if family.type == "histogram":
            out.append(_histograms(family, delta))
        else:
            out.append(_table(family, delta))
    return "\n".join(out)


def _table(family: Metric, delta: Samples) -> str:
    rows = sorted(
        (
            ({name: printable(v) for name, v in labels}, value)
            for (_, labels), value in delta.items()
            if value
        ),
        key=lambda row: -row[1],
    )
    names = sorted({n for labels, _ in rows for n in labels})
    header = f"{family.name} ({family.documentation})"
    if not rows:
        return f"{header}\n  (nothing)\n"
    widths = [max(len(n), *(len(labels.get(n, "")) for labels, _ in rows)) for n in names]
    titles = "  ".join(n.upper().ljust(w) for n, w in zip(names, widths, strict=True))
    lines = [header, f"  {titles}  COUNT"]
    for labels, value in rows:
        cells = "  ".join(labels.get(n, "").ljust(w) for n, w in zip(names, widths, strict=True))
        lines.append(f"  {cells}  {value:g}")
    return "\n".join(lines) + "\n"


def _histograms(family: Metric, delta: Samples) -> str:
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for (name, labels), value in delta.items():
        if name.endswith("_bucket"):
            le = dict(labels)["le"]
            rest = tuple((k, v) for k, v in labels if k != "le")
            series.setdefault(rest, []).append((float(le), value))
    unit, scale = _unit(family.name)
    out = [f"{family.name} ({family.documentation})"]
    for labels, buckets in sorted(series.items()):
        if labels:
            out.append("  " + ", ".join(f"{k} = {printable(v)}" for k, v in labels))
        out.extend(_bars(sorted(buckets), unit, scale))
    return "\n".join(out) + "\n"


def _unit(name: str) -> tuple[str, float]:
    if name.endswith("_seconds"):
        return "usecs", 1e6
    if name.endswith("_bytes"):
        return "bytes", 1.0
    return "value", 1.0


def _bars(cumulative: list[tuple[float, float]], unit: str, scale: float) -> list[str]:
    """bcc's print_log2_hist layout, from cumulative (le, count) pairs."""
    rows, low, previous = [], 0.0, 0.0
    for le, count in cumulative:
        rows.append((low, le, count - previous))
        low, previous = le, count
    counts = [c for _, _, c in rows]
    if not any(counts):
        return ["    (no events)"]
    first = next(i for i, c in enumerate(counts) if c)
    last = max(i for i, c in enumerate(counts) if c)
    peak = max(counts)
    lines = [f"{unit:>18}{'':15}: count     distribution"]
    for low, high, count in rows[first : last + 1]:
        span = f"{_number(low * scale)} -> {_number(high * scale)}"
        stars = "*" * round(count * BAR_WIDTH / peak)
        lines.append(f"{span:>32} : {count:<9g}|{stars:<{BAR_WIDTH}}|")
    return lines


def _number(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.0f}" if value == int(value) or value >= 100 else f"{value:g}"
