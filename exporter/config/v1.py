"""cloudflare/ebpf_exporter v1 (the BCC era, up to v1.2.5) config files, run unchanged.

A v1 file is validated against models of its own format, so errors name v1's fields
(`table`, `tracepoints`, ...), then converted to the native model with the same meaning:
metric names keep v1's `ebpf_exporter_` prefix, every probe entry is one required binding
(as in v1), and histograms take their sum from key `bucket_max + 1` as v1 did. Decoders whose
v1.2.5 output differs from ours for the same bytes get the `v1` option (decoders/_base.py).
Every key of v1.2.5's config package either means what it meant there or is refused here
with its name: docs/v1-compat.md has the table.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..probes import HARDWARE_EVENTS, SOFTWARE_EVENTS
from .models import NAME, Strict

NAMESPACE = "ebpf_exporter"
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
V1_PROBE_SECTIONS = ("kprobes", "kretprobes", "tracepoints", "raw_tracepoints", "perf_events")
# v1.2.5's decoder set; those whose output differs from ours for the same bytes run as v1's.
V1_DECODERS = Literal[
    "cgroup", "dname", "inet_ip", "ksym", "majorminor", "regexp", "static_map", "string", "uint"
]
V1_FLAVOURED = {"cgroup", "dname", "inet_ip", "ksym", "majorminor", "uint"}
DECODER_OPTIONS = {"static_map": ("static_map", "allow_unknown"), "regexp": ("regexps",)}


class V1Decoder(Strict):
    name: V1_DECODERS
    static_map: dict[str | int, str | int] | None = None
    allow_unknown: bool | None = None
    regexps: list[str] | None = None

    @model_validator(mode="after")
    def _options(self) -> V1Decoder:
        mine = DECODER_OPTIONS.get(self.name, ())
        for option in ("static_map", "allow_unknown", "regexps"):
            if getattr(self, option) is not None and option not in mine:
                raise ValueError(f"{option}: not an option of the {self.name} decoder")
        # v1 labelled every value "empty mapping" without a map, and failed the metric on
        # every scrape without regexps: here both are config errors.
        if self.name == "static_map" and not self.static_map:
            raise ValueError("static_map: required (a non-empty mapping) for static_map")
        if self.name == "regexp" and not self.regexps:
            raise ValueError("regexps: required (a non-empty list) for regexp")
        return self


class V1Label(Strict):
    name: str = Field(pattern=NAME)
    size: int = Field(gt=0)
    decoders: list[V1Decoder] = Field(min_length=1)


class V1Counter(Strict):
    name: str = Field(pattern=NAME)
    help: str = Field(min_length=1)
    table: str | None = None
    perf_map: str | None = None
    perf_map_flush_duration: Any = None
    labels: list[V1Label] = []

    @model_validator(mode="after")
    def _table_or_perf_map(self) -> V1Counter:
        if (self.table is None) == (self.perf_map is None):
            raise ValueError("give exactly one of table or perf_map")
        if self.perf_map_flush_duration is not None:
            raise ValueError(
                "perf_map_flush_duration: not supported: perf_map counters here count from "
                "start-up and are never reset (v1 reset them at this interval, by default hourly)"
            )
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

    @field_validator("bucket_multiplier")
    @classmethod
    def _unset_is_one(cls, multiplier: float) -> float:
        return multiplier or 1.0  # v1 read 0 (its Go zero value: not given) as 1

    @model_validator(mode="after")
    def _not_empty(self) -> V1Histogram:
        if self.bucket_type != "fixed" and self.bucket_max == self.bucket_min:
            # v1 logged "histogram buckets have zero size" on every scrape and exported nothing.
            raise ValueError("bucket_max: must be above bucket_min (v1 refused zero buckets)")
        return self


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
    code: str = Field(min_length=1)

    @model_validator(mode="after")
    def _probes(self) -> V1Program:
        if not any(getattr(self, section) for section in V1_PROBE_SECTIONS):
            raise ValueError(
                f"give at least one of {', '.join(V1_PROBE_SECTIONS)} (as v1 required)"
            )
        return self


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
    return [
        {"name": label.name, "size": label.size, "decoders": [_decoder(d) for d in label.decoders]}
        for label in labels
    ]


def _decoder(decoder: V1Decoder) -> dict[str, Any]:
    options = decoder.model_dump(exclude_none=True)
    return {**options, "v1": True} if decoder.name in V1_FLAVOURED else options


def _counter(counter: V1Counter) -> dict[str, Any]:
    return {
        "name": counter.name,
        "help": counter.help,
        "map": counter.table,
        "perf_map": counter.perf_map,
        "labels": _labels(counter.labels),
        # v1's client printed a counter's samples under its name as given ("oom_kills").
        "untyped": not counter.name.endswith("_total"),
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
