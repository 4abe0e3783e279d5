"""cloudflare/ebpf_exporter v1 (the BCC era, up to v1.2.5) config files, run unchanged.

A v1 file is validated against models of its own format, so errors name v1's fields
(`table`, `tracepoints`, ...), then converted to the native model with the same meaning:
metric names keep v1's `ebpf_exporter_` prefix, every probe entry is one required binding
(as in v1), and histograms take their sum from key `bucket_max + 1` as v1 did.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .models import NAME, DecoderSpec, Strict
from .probes import HARDWARE_EVENTS, SOFTWARE_EVENTS

NAMESPACE = "ebpf_exporter"
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
V1_PROBE_SECTIONS = ("kprobes", "kretprobes", "tracepoints", "raw_tracepoints", "perf_events")


class V1Label(Strict):
    name: str = Field(pattern=NAME)
    size: int = Field(gt=0)
    decoders: list[DecoderSpec] = Field(min_length=1)


class V1Counter(Strict):
    name: str = Field(pattern=NAME)
    help: str = Field(min_length=1)
    table: str | None = None
    perf_map: str | None = None
    labels: list[V1Label] = []

    @model_validator(mode="after")
    def _table_or_perf_map(self) -> V1Counter:
        if (self.table is None) == (self.perf_map is None):
            raise ValueError("give exactly one of table or perf_map")
        return self


class V1Histogram(Strict):
    name: str = Field(pattern=NAME)
    help: str = Field(min_length=1)
    table: str
    bucket_type: Literal["exp2", "linear", "fixed"]
    bucket_min: int = 0
    bucket_max: int | None = None
    bucket_keys: list[int] | None = None
    bucket_multiplier: float = 1.0
    labels: list[V1Label] = Field(min_length=1)


class V1Metrics(Strict):
    counters: list[V1Counter] = []
    histograms: list[V1Histogram] = []


class V1PerfEvent(Strict):
    type: int
    name: int
    target: str = Field(pattern=NAME)
    sample_period: int | None = Field(None, gt=0)
    sample_frequency: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_rate(self) -> V1PerfEvent:
        if (self.sample_period is None) == (self.sample_frequency is None):
            raise ValueError("give exactly one of sample_period or sample_frequency")
        return self


class V1Program(Strict):
    name: str = Field(pattern=NAME)
    metrics: V1Metrics = V1Metrics()
    kprobes: dict[str, str] = {}
    kretprobes: dict[str, str] = {}
    tracepoints: dict[str, str] = {}
    raw_tracepoints: dict[str, str] = {}
    perf_events: list[V1PerfEvent] = []
    cflags: list[str] = []
    kaddrs: list[str] = []
    code: str


class V1File(Strict):
    programs: list[V1Program] = Field(min_length=1)


def is_v1(raw: Any) -> bool:
    """v1 names maps `table` (or `perf_map`) and lists probes by kind; native has neither."""
    programs = raw.get("programs") if isinstance(raw, dict) else None
    if not isinstance(programs, list):
        return False
    for program in programs:
        if not isinstance(program, dict):
            continue
        if any(section in program for section in V1_PROBE_SECTIONS):
            return True
        metrics = program.get("metrics")
        for kind in ("counters", "histograms"):
            entries = metrics.get(kind) if isinstance(metrics, dict) else None
            for metric in entries if isinstance(entries, list) else []:
                if isinstance(metric, dict) and ("table" in metric or "perf_map" in metric):
                    return True
    return False


def to_native(program: V1Program) -> dict[str, Any]:
    """The native Program (as data for the native model) meaning what `program` meant in v1."""
    return {
        "name": program.name,
        "namespace": NAMESPACE,
        "code": program.code,
        "cflags": program.cflags,
        "kaddrs": program.kaddrs,
        "probes": _probes(program),
        "metrics": {
            "counters": [_counter(c) for c in program.metrics.counters],
            "histograms": [_histogram(h) for h in program.metrics.histograms],
        },
    }


def _probes(program: V1Program) -> list[dict[str, Any]]:
    probes = [{"function": f, "attach": [f"kprobe:{e}"]} for e, f in program.kprobes.items()]
    probes += [{"function": f, "attach": [f"kretprobe:{e}"]} for e, f in program.kretprobes.items()]
    probes += [
        {"function": f, "attach": [f"tracepoint:{e}"]} for e, f in program.tracepoints.items()
    ]
    probes += [
        {"function": f, "attach": [f"raw_tracepoint:{e}"]}
        for e, f in program.raw_tracepoints.items()
    ]
    probes += [{"function": e.target, "attach": [_perf_event(e)]} for e in program.perf_events]
    return probes


def _perf_event(event: V1PerfEvent) -> str:
    if event.type == PERF_TYPE_SOFTWARE:
        kind, names = "software", SOFTWARE_EVENTS
    elif event.type == PERF_TYPE_HARDWARE:
        kind, names = "hardware", HARDWARE_EVENTS
    else:
        raise ValueError(
            f"perf_events: type {event.type} is not supported (0 hardware, 1 software)"
        )
    name = next((n for n, config in names.items() if config == event.name), None)
    if name is None:
        raise ValueError(f"perf_events: {kind} event {event.name} is not supported")
    if event.sample_frequency is not None:
        if (kind, name) != ("software", "cpu-clock"):
            raise ValueError("perf_events: sample_frequency is supported for cpu-clock only")
        return f"profile:hz:{event.sample_frequency}"
    return f"{kind}:{name}:{event.sample_period}"


def _labels(labels: list[V1Label]) -> list[dict[str, Any]]:
    return [label.model_dump() for label in labels]


def _counter(counter: V1Counter) -> dict[str, Any]:
    return {
        "name": counter.name,
        "help": counter.help,
        "map": counter.table,
        "perf_map": counter.perf_map,
        "labels": _labels(counter.labels),
    }


def _histogram(histogram: V1Histogram) -> dict[str, Any]:
    # v1 read the sum from the key after the last bucket (0 when the program keeps none).
    if histogram.bucket_type == "fixed":
        sum_key = (histogram.bucket_keys or [0])[-1] + 1
    else:
        sum_key = (histogram.bucket_max or 0) + 1
    return {
        **histogram.model_dump(exclude={"table", "labels"}),
        "map": histogram.table,
        "labels": _labels(histogram.labels),
        "sum_key": sum_key,
    }
