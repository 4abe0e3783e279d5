"""The maps a script exports -> the native `metrics:` block that reads them.

Names: `<program>_<map>` (`<program>` for the unnamed map `@`), `_total` on counters; the
exporter puts `<namespace>_` before them. Bucket keys are the (exclusive) upper bounds of
bpftrace's buckets, exported as `le` (the convention of the project's exp2 histograms: a bucket
holds values below its bound):
- hist(): negatives le 0, 0 in le 1, 1 in le 2, [2^k, 2^(k+1)) in le 2^(k+1) up to 2^31;
  from 2^31 on (bpftrace 0.17's last bucket, printed [2G, 4G)) in +Inf only.
- lhist(min, max, step): below min in le min, [min + (i-1)step, min + i*step) in le
  min + i*step, and bpftrace's last bucket (from min + N*step, N = (max - min) / step, on) in
  +Inf only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .codegen import Translation
from .maps import KINDS, MapFacts
from .types import Integer, String, Type, key_size

# 0, 1, 2, 4, ... 2^31: bpftrace 0.17 counts every value from 2^31 up in one last bucket
# (its log2 stops there; it prints it as [2G, 4G)), exported as +Inf only.
HIST_BOUNDS = [0, *(1 << k for k in range(32))]
# unit -> (metric name suffix, multiplier to it); only histograms scale their values.
UNITS = {
    "nanoseconds": ("seconds", "0.000000001"),
    "microseconds": ("seconds", "0.000001"),
    "milliseconds": ("seconds", "0.001"),
    "seconds": ("seconds", "1"),
    "bytes": ("bytes", "1"),
}


@dataclass(frozen=True)
class Listed:
    """A map the program's `metrics:` names: exported even if scratch, as configured."""

    help: str | None = None
    unit: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


class MetricsError(ValueError):
    """A `metrics:` entry that does not fit the script; its text starts with the field."""


def native_metrics(program: str, done: Translation, listed: dict[str, Listed]) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {"counters": [], "gauges": [], "histograms": []}
    for name in listed:
        if name not in done.maps.facts:
            known = ", ".join(sorted(done.maps.facts)) or "none"
            raise MetricsError(f"map: the script has no map {name} (maps: {known})")
    for facts in done.maps.facts.values():
        settings = listed.get(facts.name)
        if settings is None:
            if facts.scratch:
                continue
            settings = Listed()
        kind = KINDS[facts.kind or "value"]
        out[kind + "s"].append(_metric(program, facts, kind, settings, done.probes))
    return out


def _metric(
    program: str, facts: MapFacts, kind: str, settings: Listed, probes: list[str]
) -> dict[str, Any]:
    name = program if facts.name == "@" else f"{program}_{facts.name[1:]}"
    multiplier = "1"
    if settings.unit is not None:
        suffix, multiplier = UNITS[settings.unit]
        if multiplier != "1" and kind != "histogram":
            raise MetricsError(
                f"unit: {settings.unit}: only histograms scale their values; a {kind} is "
                "exported as the map holds it (use seconds or bytes to name its unit)"
            )
        if not name.endswith("_" + suffix):
            name += "_" + suffix
    if kind == "counter":
        name += "_total"
    keys = facts.keys[:-1] if kind == "histogram" else facts.keys
    unknown = sorted(set(settings.labels) - set(facts.labels))
    if unknown:
        raise MetricsError(
            f"labels: {facts.name} has no key {', '.join(unknown)} "
            f"(its keys: {', '.join(facts.labels) or 'none'})"
        )
    labels = [
        _label(settings.labels.get(label, label), typ, probes)
        for label, typ in zip(facts.labels, keys, strict=True)
    ]
    metric: dict[str, Any] = {
        "name": name,
        "help": settings.help or _help(facts),
        "map": facts.c_name,
        "labels": labels,
        "bpftrace": {"map": facts.name, "aggregation": facts.kind or "value", "lhist": facts.lhist},
    }
    if kind == "gauge" and facts.value_type.signed:
        metric["signed"] = True
    if kind == "histogram":
        metric["labels"].append({"name": "bucket", "size": 8, "decoders": [{"name": "uint"}]})
        metric["bucket_type"] = "fixed"
        metric["bucket_keys"] = _bounds(facts)
        metric["bucket_multiplier"] = float(Decimal(multiplier))
    return metric


def _label(name: str, typ: Type, probes: list[str]) -> dict[str, Any]:
    if isinstance(typ, String):
        return {"name": name, "size": key_size(typ), "decoders": [{"name": "string"}]}
    assert isinstance(typ, Integer)
    if typ.kind == "probe":
        table = dict(enumerate(probes))
        return {
            "name": name,
            "size": 8,
            "decoders": [{"name": "uint"}, {"name": "static_map", "static_map": table}],
        }
    if typ.kind == "ksym":
        return {"name": name, "size": 8, "decoders": [{"name": "ksym"}]}
    # bpftrace 0.17 prints every integer key as a signed 64-bit one (@[0xffffffffffffffff] is
    # @[-1]), whatever the expression's type: so does the label.
    return {"name": name, "size": 8, "decoders": [{"name": "uint", "signed": True}]}


def _bounds(facts: MapFacts) -> list[int]:
    if facts.kind == "hist":
        return HIST_BOUNDS
    assert facts.lhist is not None
    low, high, step = facts.lhist
    return [low + i * step for i in range((high - low) // step + 1)]


def _help(facts: MapFacts) -> str:
    keys = f"[{', '.join(facts.labels)}]" if facts.labels else ""
    what = "a value" if facts.kind == "value" else f"{facts.kind}()"
    return f"bpftrace {facts.name}{keys} = {what}"
