"""One loaded program's maps -> metric families, with labels decoded once per raw key."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..bpf.maps import MapReader, possible_cpus
from ..bpf.syscall import MapType
from ..config.models import Counter, Gauge, Histogram, Label
from ..config.models import Metric as MetricConfig
from ..decoders import Chain, DecoderError, SkipSeries, build_chain
from ..errors import LoadError
from ..loader import LoadedProgram
from .histogram import Buckets

log = logging.getLogger(__name__)

NAMESPACE = "bcc"
# Decoded-label cache entries per metric before it starts over (recycled ids would grow it).
CACHE_LIMIT = 200_000
DROP = None  # cached verdict of a key whose series a decoder dropped


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    chain: Chain


class MetricReader:
    """Reads one metric's map and decodes its keys; caches labels by raw key bytes."""

    def __init__(self, program: LoadedProgram, where: str, config: MetricConfig) -> None:
        self.config = config
        self.where = where
        fd = program.maps.get(config.map)
        if fd is None:
            known = ", ".join(sorted(program.maps)) or "none"
            raise LoadError(
                program.name, f"{where}.map: no map named {config.map!r} (maps: {known})"
            )
        self.reader = MapReader(fd)
        self.cpu_label = _cpu_label(program.name, where, config.labels, self.reader)
        key_labels = [label for label in config.labels if not is_cpu_label(label)]
        self.fields = _layout(program.name, where, key_labels, self.reader.info.key_size)
        is_histogram = isinstance(config, Histogram)
        self.label_fields = self.fields[:-1] if is_histogram else self.fields
        self.label_names = [label.name for label in config.labels]
        if is_histogram:
            self.label_names.remove(self.fields[-1].name)
        self.label_bytes = self.fields[-1].offset if is_histogram else self.reader.info.key_size
        self.is_array = self.reader.info.type in (MapType.ARRAY, MapType.PERCPU_ARRAY)
        self.cpus = [str(cpu) for cpu in possible_cpus()]
        self._cache: dict[bytes, tuple[str, ...] | None] = {}
        self.decoder_errors = 0

    def labels(self, key: bytes) -> tuple[str, ...] | None:
        """Label values of a key (its label part), or None when a decoder drops the series."""
        prefix = key[: self.label_bytes]
        try:
            return self._cache[prefix]
        except KeyError:
            pass
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        try:
            values: tuple[str, ...] | None = tuple(
                f.chain.decode(prefix[f.offset : f.offset + f.size]) for f in self.label_fields
            )
        except SkipSeries:
            values = DROP
        self._cache[prefix] = values
        return values

    def entries(self, skip_zero: bool = False) -> Iterator[tuple[bytes, tuple[str, ...], int]]:
        """(key, label values, value) of every entry whose labels decode; per-CPU maps are
        summed over CPUs, or give one entry per CPU when the metric has a cpu label."""
        if self.cpu_label is None:
            for key, value in self.reader.items():
                if value or not skip_zero:
                    labels = self.labels_of(key)
                    if labels is not None:
                        yield key, labels, value
            return
        at = self.cpu_label
        for key, values in self.reader.items_per_cpu():
            labels = self.labels_of(key)
            if labels is None:
                continue
            for cpu, value in zip(self.cpus, values, strict=True):
                if value or not skip_zero:
                    yield key, (*labels[:at], cpu, *labels[at:]), value

    def summed(self, skip_zero: bool = False) -> dict[tuple[str, ...], int]:
        """Values by decoded labels; keys that decode alike (recycled ids) are summed."""
        out: dict[tuple[str, ...], int] = {}
        for _, labels, value in self.entries(skip_zero):
            out[labels] = out.get(labels, 0) + value
        return out

    def labels_of(self, key: bytes) -> tuple[str, ...] | None:
        try:
            return self.labels(key)
        except Exception as err:  # noqa: BLE001 - one bad key must not cost the scrape
            self.decoder_errors += 1
            log.debug("%s: cannot decode key %s: %s", self.where, key.hex(), err)
            return None


def is_cpu_label(label: Label) -> bool:
    return label.decoders[0].name == "cpu"


def _cpu_label(program: str, where: str, labels: list[Label], reader: MapReader) -> int | None:
    """Position of the label that splits a per-CPU map by CPU, if the metric has one."""
    positions = [i for i, label in enumerate(labels) if is_cpu_label(label)]
    if not positions:
        return None
    if not reader.percpu:
        raise LoadError(
            program,
            f"{where}.labels[{positions[0]}]: a cpu label needs a per-CPU map, "
            f"and {reader.info.name!r} is not one",
        )
    return positions[0]


def _layout(program: str, where: str, labels: list[Label], key_size: int) -> list[Field]:
    fields, offset = [], 0
    for i, label in enumerate(labels):
        try:
            chain = build_chain([d.options for d in label.decoders], label.size)
        except DecoderError as err:
            raise LoadError(program, f"{where}.labels[{i}].decoders: {err}") from None
        fields.append(Field(label.name, offset, label.size, chain))
        offset += label.size + label.padding
    if offset != key_size:
        raise LoadError(
            program,
            f"{where}.labels: the labels span {offset} bytes but the map's key is {key_size} bytes",
        )
    return fields


class ProgramCollector:
    """The metric families of one program; a lock makes concurrent scrapes take turns."""

    def __init__(self, program: LoadedProgram) -> None:
        self.program = program
        metrics = program.spec.program.metrics
        self.counters = [
            MetricReader(program, f"metrics.counters[{i}]", c)
            for i, c in enumerate(metrics.counters)
        ]
        self.gauges = [
            MetricReader(program, f"metrics.gauges[{i}]", g) for i, g in enumerate(metrics.gauges)
        ]
        self.histograms = [
            (MetricReader(program, f"metrics.histograms[{i}]", h), Buckets.from_config(h))
            for i, h in enumerate(metrics.histograms)
        ]
        self._lock = threading.Lock()

    @property
    def readers(self) -> list[MetricReader]:
        return [*self.counters, *self.gauges, *(r for r, _ in self.histograms)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            families: list[Metric] = []
            families.extend(self._counter(r) for r in self.counters)
            families.extend(self._gauge(r) for r in self.gauges)
            families.extend(self._histogram(r, b) for r, b in self.histograms)
        yield from families

    def _counter(self, reader: MetricReader) -> Metric:
        config: Counter = reader.config  # type: ignore[assignment]
        family = CounterMetricFamily(_name(config), config.help, labels=reader.label_names)
        # Array slots exist before anything happened: a zero slot counted nothing, no series.
        for labels, value in reader.summed(skip_zero=reader.is_array).items():
            family.add_metric(labels, value)
        return family

    def _gauge(self, reader: MetricReader) -> Metric:
        config: Gauge = reader.config  # type: ignore[assignment]
        family = GaugeMetricFamily(_name(config), config.help, labels=reader.label_names)
        for labels, value in reader.summed().items():
            family.add_metric(labels, value)
        return family

    def _histogram(self, reader: MetricReader, buckets: Buckets) -> Metric:
        config: Histogram = reader.config  # type: ignore[assignment]
        bucket = reader.fields[-1]
        per_series: dict[tuple[str, ...], dict[int, int]] = {}
        for key, labels, value in reader.entries():
            try:
                slot = int(bucket.chain.decode(key[bucket.offset : bucket.offset + bucket.size]))
            except (SkipSeries, ValueError):
                reader.decoder_errors += 1
                continue
            counts = per_series.setdefault(labels, {})
            counts[slot] = counts.get(slot, 0) + value
        family = HistogramMetricFamily(_name(config), config.help, labels=reader.label_names)
        for labels, counts in per_series.items():
            series, total = buckets.render(counts)
            family.add_metric(list(labels), series, total)
        return family


def _name(config: MetricConfig) -> str:
    return f"{NAMESPACE}_{config.name}"
