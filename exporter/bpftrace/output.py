"""A bpftrace program's maps, printed as bpftrace 0.17 prints them when it exits (its
src/output.cpp and BPFtrace::print_map): `@name[key, key]: value` lines, hist() and lhist()
as bars. `bcc_exporter snapshot` prints a `bpftrace:` program's window this way.

From what the exporter exports: the window's counts (counters, histograms) or the values now
(gauges), keyed by the labels of the map's keys. Maps are printed by name; each map's entries
sorted as bpftrace sorts them (by value, histograms by their total, averages by their mean),
equal ones by key where bpftrace leaves their order to its hash map.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.core import Metric as Family

from ..config.models import Metric

BAR_WIDTH = 52
# (sample name, sorted labels) -> value: a window's start (snapshot.samples()).
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class PrintedMap:
    name: str  # @name
    aggregation: str  # count, sum, hist, lhist, min, max, avg, value
    # (key texts, value) for plain maps, (key texts, counts per bucket) for histograms: the
    # buckets in bpftrace's order (hist: (..., 0), [0], [1], [2, 4) ... [2G, 4G); lhist:
    # (..., min), each step, [max, ...)).
    entries: list[tuple[tuple[str, ...], int | list[int]]]
    lhist: tuple[int, int, int] | None = None


def render(maps: Iterable[PrintedMap]) -> str:
    out = []
    for printed in sorted(maps, key=lambda m: m.name):
        if printed.aggregation in ("hist", "lhist"):
            out.append(_histograms(printed))
        else:
            out.append(_values(printed))
    return "".join(out)


def _key(printed: PrintedMap, keys: tuple[str, ...]) -> str:
    return printed.name + (f"[{', '.join(keys)}]" if keys else "")


def _values(printed: PrintedMap) -> str:
    entries = sorted(printed.entries, key=lambda e: (e[1], e[0]))
    lines = [f"{_key(printed, keys)}: {value}" for keys, value in entries]
    # Averages are printed as stats are: a blank line after the map.
    return "\n".join(lines) + "\n" + ("\n" if printed.aggregation == "avg" else "")


def _histograms(printed: PrintedMap) -> str:
    entries = sorted(printed.entries, key=lambda e: (sum(e[1]), e[0]))  # type: ignore[arg-type]
    parts = []
    for keys, counts in entries:
        assert isinstance(counts, list)
        parts.append(f"{_key(printed, keys)}: \n{_bars(printed, counts)}")
    return "\n".join(parts) + "\n"


def _bars(printed: PrintedMap, counts: list[int]) -> str:
    used = [i for i, count in enumerate(counts) if count]
    if not used:
        return ""
    peak = max(counts)
    lines = []
    for i in range(used[0], used[-1] + 1):
        header = _hist_header(i) if printed.lhist is None else _lhist_header(i, *printed.lhist)
        # bpftrace's `int bar_width = value / (float)max_value * 52`: single precision.
        width = int(_f32(_f32(_f32(counts[i]) / _f32(peak)) * BAR_WIDTH))
        lines.append(f"{header:<16}{counts[i]:>8} |{'@' * width:<{BAR_WIDTH}}|\n")
    return "".join(lines)


def _f32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def _hist_header(i: int) -> str:
    if i < 3:
        return ("(..., 0)", "[0]", "[1]")[i]
    return f"[{_power(i - 2)}, {_power(i - 1)})"


def _power(power: int) -> str:
    for suffix, at in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if power >= at:
            return f"{1 << (power - at)}{suffix}"
    return str(1 << power)


def _lhist_header(i: int, low: int, high: int, step: int) -> str:
    if i == 0:
        return f"(..., {_number(low)})"
    if i == (high - low) // step + 1:
        return f"[{_number(high)}, ...)"
    return f"[{_number(low + (i - 1) * step)}, {_number(low + i * step)})"


def _number(number: int) -> str:
    if number and number % (1 << 20) == 0:
        return f"{number >> 20}M"
    if number and number % (1 << 10) == 0:
        return f"{number >> 10}K"
    return str(number)


def printed_maps(
    namespace: str, metrics: list[Metric], families: list[Family], before: Samples
) -> list[PrintedMap]:
    """The maps of the program's bpftrace metrics, from its families now and the samples
    `before` the window (counters and histograms count the window, gauges are as now)."""
    by_name = {family.name: family for family in families}
    found = []
    for metric in metrics:
        if metric.bpftrace is None:
            continue
        name = f"{namespace}_{metric.name}"
        family = by_name.get(name.removesuffix("_total"))
        if family is None:
            continue
        labels = [label.name for label in metric.labels]
        window = family.type != "gauge"
        entries: dict[tuple[str, ...], dict[float, float]] = {}
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            value = sample.value - (before.get(key, 0.0) if window else 0.0)
            if family.type == "histogram":
                if not sample.name.endswith("_bucket"):
                    continue
                keys = tuple(sample.labels[n] for n in labels[:-1])
                entries.setdefault(keys, {})[float(sample.labels["le"])] = value
            elif value or not window:
                keys = tuple(sample.labels[n] for n in labels)
                entries[keys] = {0.0: value}
        found.append(_printed(metric, entries))
    return found


def _printed(metric: Metric, entries: dict[tuple[str, ...], dict[float, float]]) -> PrintedMap:
    assert metric.bpftrace is not None
    aggregation = metric.bpftrace.aggregation
    rows: list[tuple[tuple[str, ...], int | list[int]]] = []
    for keys, values in entries.items():
        if aggregation not in ("hist", "lhist"):
            rows.append((keys, int(values[0.0])))
            continue
        cumulative = [int(values[le]) for le in sorted(values)]
        counts = [now - below for now, below in zip(cumulative, [0, *cumulative], strict=False)]
        if any(counts):
            rows.append((keys, counts))
    return PrintedMap(metric.bpftrace.map, aggregation, rows, metric.bpftrace.lhist)
