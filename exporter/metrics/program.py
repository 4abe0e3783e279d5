"""One loaded program's maps -> metric families, with labels decoded once per raw key."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TypeVar

from prometheus_client.core import Metric

from ..bpf.maps import MapReader, possible_cpus
from ..bpf.syscall import MapType
from ..config.models import Counter, Gauge, Histogram, Label
from ..config.models import Metric as MetricConfig
from ..decoders import SkipSeries
from ..errors import LoadError
from ..loader import LoadedProgram
from . import MAX_SERIES
from .events import EventCounter
from .evictions import Evictions
from .exposition import Family, HistogramValue, SeriesText, counter_type
from .histogram import Buckets
from .labels import Field, LabelDecoder, is_cpu_label, layout

log = logging.getLogger(__name__)

# Dropped series remembered from one collection to the next, so that each is counted once
# (~60 bytes each). Past it, only their number is: see DroppedSeries.
REMEMBERED_DROPPED = 100_000
V = TypeVar("V")


class DroppedSeries:
    """bcc_exporter_series_dropped_total of one metric: each series over the limit counted
    once, when a collection first finds it dropped (again if it left the map and came back),
    however often the metric is collected.

    A collection hands over the hashes of the label sets it dropped. Up to
    REMEMBERED_DROPPED of them are remembered for the next collection; a collection dropping
    more counts only by how many more it dropped than the one before (a map far over the limit
    must not cost memory: its series are not cached either)."""

    def __init__(self) -> None:
        self.total = 0
        self._last: set[int] = set()
        self._last_count = 0

    def collected(self, dropped: set[int], count: int) -> int:
        """Take one collection's dropped series (`count` of them, whose hashes are `dropped`,
        all of them or the first REMEMBERED_DROPPED); return how many are new."""
        if count <= REMEMBERED_DROPPED and self._last_count <= REMEMBERED_DROPPED:
            new = len(dropped - self._last)
        else:
            new = max(0, count - self._last_count)
        self._last = dropped if count <= REMEMBERED_DROPPED else set()
        self._last_count = count
        self.total += new
        return new


def _remember(dropped: set[int], labels: tuple[str, ...]) -> None:
    if len(dropped) < REMEMBERED_DROPPED:
        dropped.add(hash(labels))


class MetricReader:
    """Reads one metric's map; its keys decode to labels through a cached LabelDecoder."""

    def __init__(self, program: LoadedProgram, where: str, config: MetricConfig) -> None:
        self.config = config
        fd = program.maps.get(config.map or "")
        if fd is None:
            known = ", ".join(sorted(program.maps)) or "none"
            raise LoadError(
                program.name, f"{where}.map: no map named {config.map!r} (maps: {known})"
            )
        self.reader = MapReader(fd)
        self.cpu_label = _cpu_label(program.name, where, config.labels, self.reader)
        fields, span = layout(program.name, where, config)
        key_size = self.reader.info.key_size
        # A metric without labels sums every key into its one series (a bpftrace map without
        # keys has one element, under a key of 8 bytes).
        if span != key_size and config.labels:
            raise LoadError(
                program.name,
                f"{where}.labels: the labels span {span} bytes but the map's key is {key_size}",
            )
        self.label_names = [label.name for label in config.labels]
        if isinstance(config, Histogram):
            self.bucket: Field | None = fields.pop()
            self.label_names.remove(self.bucket.name)
            span = self.bucket.offset
        else:
            self.bucket = None
        self.labels = LabelDecoder(where, fields, span)
        self.text = SeriesText(self.label_names)
        self.is_array = self.reader.info.type in (MapType.ARRAY, MapType.PERCPU_ARRAY)
        self.entries_read = 0  # keys in the map at the last collection
        self.dropped = DroppedSeries()
        self.cpus = [str(cpu) for cpu in possible_cpus()]

    @property
    def decoder_errors(self) -> int:
        return self.labels.errors

    def entries(self, skip_zero: bool = False) -> Iterator[tuple[bytes, tuple[str, ...], int]]:
        """(key, label values, value) of every entry whose labels decode; per-CPU maps are
        summed over CPUs, or give one entry per CPU when the metric has a cpu label."""
        self.labels.begin(self.entries_read)
        self.entries_read = 0
        if self.cpu_label is None:
            for key, value in self.reader.iter_items():
                self.entries_read += 1
                if value or not skip_zero:
                    labels = self.labels(key)
                    if labels is not None:
                        yield key, labels, value
            self.labels.end()
            return
        at = self.cpu_label
        for key, values in self.reader.iter_items_per_cpu():
            self.entries_read += 1
            labels = self.labels(key)
            if labels is None:
                continue
            for cpu, value in zip(self.cpus, values, strict=True):
                if value or not skip_zero:
                    yield key, (*labels[:at], cpu, *labels[at:]), value
        self.labels.end()

    def summed(
        self, limit: int, skip_zero: bool = False
    ) -> tuple[dict[tuple[str, ...], int], set[int], int]:
        """Values by decoded labels, at most `limit` of them, and the series dropped for being
        past it: the hashes of (at most REMEMBERED_DROPPED of) their labels, and how many.
        Keys that decode alike (recycled ids) are summed, also past the limit into a kept
        series; a dropped key is decoded but not cached, so a map far over the limit costs
        neither memory nor the kept series' cache entries."""
        out: dict[tuple[str, ...], int] = {}
        dropped: set[int] = set()
        count = 0
        if self.cpu_label is not None:
            for _, labels, value in self.entries(skip_zero):
                if labels in out:
                    out[labels] += value
                elif len(out) < limit:
                    out[labels] = value
                else:
                    count += 1
                    _remember(dropped, labels)
            return out, dropped, count
        # entries() inlined for the common case: this runs for each of up to ~1M keys.
        decode = self.labels
        decode.begin(self.entries_read)
        read = 0
        for key, value in self.reader.iter_items():
            read += 1
            if value or not skip_zero:
                full = len(out) >= limit
                decoded = decode(key, not full)
                if decoded is None:
                    continue
                if decoded in out:
                    out[decoded] += value
                elif full:
                    count += 1
                    _remember(dropped, decoded)
                else:
                    out[decoded] = value
        decode.end()
        self.entries_read = read
        return out, dropped, count


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


class ProgramCollector:
    """The metric families of one program; a lock makes concurrent scrapes take turns."""

    def __init__(self, program: LoadedProgram, max_series: int = MAX_SERIES) -> None:
        self.program = program
        self.max_series = max_series
        metrics = program.spec.program.metrics
        self.counters = [
            MetricReader(program, f"metrics.counters[{i}]", c)
            for i, c in enumerate(metrics.counters)
            if c.map is not None
        ]
        self.gauges = [
            MetricReader(program, f"metrics.gauges[{i}]", g) for i, g in enumerate(metrics.gauges)
        ]
        self.histograms = [
            (MetricReader(program, f"metrics.histograms[{i}]", h), Buckets.from_config(h))
            for i, h in enumerate(metrics.histograms)
        ]
        self.events = [
            EventCounter(program, f"metrics.counters[{i}]", c)
            for i, c in enumerate(metrics.counters)
            if c.perf_map is not None
        ]
        self.evictions = Evictions(
            program, (r.config.map for r in self.map_readers if not r.is_array and r.config.map)
        )
        self._lock = threading.Lock()
        self.closed = False

    @property
    def map_readers(self) -> list[MetricReader]:
        return [*self.counters, *self.gauges, *(r for r, _ in self.histograms)]

    @property
    def readers(self) -> list[MetricReader | EventCounter]:
        return [*self.map_readers, *self.events]

    def close(self) -> None:
        """Stop reading, then detach: closing the program's fds frees everything. Waits for
        a collection in progress, which would otherwise read fds the kernel may reuse."""
        with self._lock:
            self.closed = True
            for events in self.events:
                events.close()
            self.program.close()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self.closed:  # replaced by a reload while this scrape began
                return
            added = self.evictions.added()  # before the maps: see metrics.evictions
            families: list[Metric] = []
            families.extend(self._counter(r) for r in self.counters)
            families.extend(self._gauge(r) for r in self.gauges)
            families.extend(self._histogram(r, b) for r, b in self.histograms)
            families.extend(e.family(_name(self.program, e.config)) for e in self.events)
            self.evictions.present(
                added, {r.config.map: r.entries_read for r in self.map_readers if r.config.map}
            )
        yield from families

    def _counter(self, reader: MetricReader) -> Metric:
        # Array slots exist before anything happened: a zero slot counted nothing, no series.
        series = reader.summed(self.max_series, skip_zero=reader.is_array)
        assert isinstance(reader.config, Counter)
        return self._family(reader, counter_type(reader.config), self._bounded(reader, *series))

    def _gauge(self, reader: MetricReader) -> Metric:
        values, dropped, count = reader.summed(self.max_series)
        if isinstance(reader.config, Gauge) and reader.config.signed:
            values = {labels: _signed(value) for labels, value in values.items()}
        return self._family(reader, "gauge", self._bounded(reader, values, dropped, count))

    def _histogram(self, reader: MetricReader, buckets: Buckets) -> Metric:
        assert reader.bucket is not None
        per_series: dict[tuple[str, ...], dict[int, int]] = {}
        # Label sets, not keys: a series has a key per bucket. Holds only the dropped series'
        # labels, never their buckets.
        dropped: set[tuple[str, ...]] = set()
        for key, labels, value in reader.entries():
            try:
                slot = int(reader.bucket.decode(key))
            except (SkipSeries, ValueError):
                reader.labels.errors += 1
                continue
            counts = per_series.get(labels)
            if counts is None:
                if len(per_series) >= self.max_series:
                    dropped.add(labels)
                    continue
                counts = per_series[labels] = {}
            counts[slot] = counts.get(slot, 0) + value
        hashes = {hash(labels) for labels in dropped}
        series = self._bounded(reader, per_series, hashes, len(dropped))
        rendered: list[tuple[tuple[str, ...], HistogramValue]] = [
            (labels, buckets.render(counts)) for labels, counts in series
        ]
        return self._family(reader, "histogram", rendered)

    def _family(
        self, reader: MetricReader, typ: str, series: list[tuple[tuple[str, ...], V]]
    ) -> Metric:
        config = reader.config
        reader.text.keep(series)
        return Family(_name(self.program, config), config.help, typ, reader.text, series)

    def _bounded(
        self, reader: MetricReader, series: dict[tuple[str, ...], V], dropped: set[int], count: int
    ) -> list[tuple[tuple[str, ...], V]]:
        """The series kept under the limit, with the ones past it counted (each once) and
        logged when new ones are: the first ones seen are kept, so existing series do not
        flap."""
        if reader.dropped.collected(dropped, count):
            log.warning(
                'program "%s": %s has %d series, over the limit of %d: %d dropped',
                self.program.name,
                reader.config.name,
                len(series) + count,
                self.max_series,
                count,
            )
        return list(series.items())


def _signed(value: int) -> int:
    """A sum of 8-byte values (over CPUs) as the two's complement number it is."""
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


def _name(program: LoadedProgram, config: MetricConfig) -> str:
    return f"{program.spec.program.namespace}_{config.name}"
