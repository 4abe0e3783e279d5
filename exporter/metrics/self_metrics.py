"""The exporter's own metrics (bcc_exporter_*) and the per-program error boundary."""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import Histogram
from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from .. import __version__
from ..bpf.maps import MapReader
from ..bpf.syscall import BPFError, prog_info
from ..compiler.prelude import FAILURES_MAP
from ..config.v1 import NAMESPACE as V1
from ..errors import LoadError
from ..headers import HeaderCheck
from ..loader import LoadedProgram
from ..status import ProgramStatus, statuses
from ..targets import TargetWatch
from .evictions import by_map_name
from .exposition import Family, counter, gauge, series_text
from .program import ProgramCollector

log = logging.getLogger(__name__)

PREFIX = "bcc_exporter"


class ExporterCollector:
    """Collects every program inside its own boundary, then the exporter's own metrics."""

    def __init__(self, headers: HeaderCheck | None = None) -> None:
        self.headers = headers
        self.collectors: list[ProgramCollector] = []
        self.status: tuple[ProgramStatus, ...] = ()
        self.update_failures: list[UpdateFailures] = []
        self._tags: dict[tuple[str, str], str] = {}  # (program, function) -> v1's tag text
        self.targets = TargetWatch()
        self.last_reload_successful = True
        self.last_reload_success_time = time.time()
        self.started = False  # set once start-up has loaded every program (or failed to)

    def reloaded(self, successful: bool) -> None:
        self.last_reload_successful = successful
        if successful:
            self.last_reload_success_time = time.time()

    def set_programs(
        self, collectors: Iterable[ProgramCollector], failed: Iterable[LoadError]
    ) -> None:
        self.collectors = list(collectors)
        self._tags = {}
        self.status = statuses((c.program for c in self.collectors), failed)
        self.update_failures = [UpdateFailures(c.program) for c in self.collectors]
        self.targets.watch(
            (c.program.name, a.function, a.probe, a.target)
            for c in self.collectors
            for a in c.program.attachments
            if a.target is not None
        )

    def collect(self) -> Iterator[Metric]:
        success = gauge(
            f"{PREFIX}_collect_success",
            "Whether the last collection of a program's maps succeeded.",
            labels=["program"],
        )
        duration = gauge(
            f"{PREFIX}_collect_duration_seconds",
            "How long the last collection of a program took.",
            labels=["program"],
        )
        for collector in self.collectors:
            started = time.perf_counter()
            try:
                families = list(collector.collect())
            except Exception as err:  # noqa: BLE001 - node_exporter's rule: one collector, one failure
                log.error('program "%s": collection failed: %s', collector.program.name, err)
                families, ok = [], 0.0
            else:
                ok = 1.0
            yield from families
            success.add_metric([collector.program.name], ok)
            duration.add_metric([collector.program.name], time.perf_counter() - started)
        yield success
        yield duration
        yield from self._program_metrics()
        yield from self._reload_metrics()
        yield from self._build_metrics()

    def _program_metrics(self) -> Iterator[Metric]:
        enabled = gauge(
            f"{PREFIX}_enabled_programs",
            "Configured programs: 1 loaded and attached, 0 failed.",
            labels=["program"],
        )
        attached = gauge(
            f"{PREFIX}_program_attached",
            "Which probe each program function is attached to.",
            labels=["program", "function", "probe"],
        )
        compile_seconds = gauge(
            f"{PREFIX}_program_compile_seconds",
            "Time the compile worker took to compile a program.",
            labels=["program"],
        )
        decoder_errors = counter(
            f"{PREFIX}_decoder_errors",
            "Keys whose labels could not be decoded, counted at every collection meeting them.",
            labels=["program", "metric"],
        )
        for status in self.status:
            enabled.add_metric([status.program], 1 if status.state == "attached" else 0)
            if status.state == "attached":
                compile_seconds.add_metric([status.program], status.compile_seconds)
            for function, probe in status.probes:
                attached.add_metric([status.program, function, probe], 1)
        for collector in self.collectors:
            for reader in collector.readers:
                decoder_errors.add_metric(
                    [collector.program.name, reader.config.name], reader.decoder_errors
                )
        lost = counter(
            f"{PREFIX}_perf_events_lost",
            "Events a full perf ring dropped before they were counted (perf_map counters).",
            labels=["program", "metric"],
        )
        for collector in self.collectors:
            for events in collector.events:
                lost.add_metric([collector.program.name, events.config.name], events.lost)
        yield from (enabled, attached, compile_seconds, decoder_errors, lost)
        yield self._target_metrics()
        yield from self._map_metrics()
        yield from self._v1_metrics()
        yield from _run_stats(c.program for c in self.collectors)

    def _target_metrics(self) -> Metric:
        missing = gauge(
            f"{PREFIX}_probe_target_missing",
            "1 while the file a uprobe or USDT probe was attached to is deleted or replaced: "
            "processes started from a new file at that path are not traced.",
            labels=["program", "function", "probe"],
        )
        for (program, function, probe, _), gone in self.targets.missing().items():
            missing.add_metric([program, function, probe], 1 if gone else 0)
        return missing

    def _v1_metrics(self) -> Iterator[Metric]:
        """ebpf_exporter v1's own self metrics, for dashboards built on them."""
        v1 = [c.program for c in self.collectors if c.program.spec.program.namespace == V1]
        if not v1:
            return
        enabled = gauge(f"{V1}_enabled_programs", "The set of enabled programs", labels=["name"])
        programs = gauge(
            f"{V1}_ebpf_programs", "Info about ebpf programs", labels=["program", "function", "tag"]
        )
        for program in v1:
            enabled.add_metric([program.name], 1)
            for function in sorted(_v1_mapped(program)):
                tag = self._v1_tag(program, function)
                if tag is not None:
                    programs.add_metric([program.name, function, tag], 1)
        yield enabled
        yield programs

    def _v1_tag(self, program: LoadedProgram, function: str) -> str | None:
        """A function's tag as v1 printed it (%x of a uint64: no leading zeros), read once per
        load: a loaded program's tag never changes."""
        key = (program.name, function)
        if key not in self._tags:
            try:
                tag = prog_info(program.functions[function]).tag
            except (BPFError, KeyError):
                return None  # not attached (the program was skipped), or gone
            self._tags[key] = tag.lstrip("0") or "0"
        return self._tags[key]

    def _map_metrics(self) -> Iterator[Metric]:
        dropped = counter(
            f"{PREFIX}_series_dropped",
            "Series over the per-metric limit (--metrics.max-series), not exported: each "
            "counted once, by the first collection that drops it.",
            labels=["program", "metric"],
        )
        entries = gauge(
            f"{PREFIX}_map_entries",
            "Keys in a hash map a metric reads, at its last collection (fill: / max_entries).",
            labels=["program", "map"],
        )
        capacity = gauge(
            f"{PREFIX}_map_max_entries",
            "Capacity of a hash map a metric reads: updates fail once it is full.",
            labels=["program", "map"],
        )
        evictions = counter(
            f"{PREFIX}_map_evictions",
            "Keys that left a hash map a metric reads: evicted by an LRU map to make room for a "
            "new key, or deleted by the program when their subject ended (a removed cgroup). "
            "Keys the program added minus keys present, read before them: never ahead, exact "
            "once the map is quiet.",
            labels=["program", "map"],
        )
        for collector in self.collectors:
            name = collector.program.name
            for map_name, gone in sorted(collector.evictions.total.items()):
                evictions.add_metric([name, map_name], gone)
            fill: dict[str, tuple[int, int]] = {}  # several metrics may read one map
            for reader in collector.map_readers:
                dropped.add_metric([name, reader.config.name], reader.dropped.total)
                if not reader.is_array and reader.config.map:
                    fill[reader.config.map] = (reader.entries_read, reader.reader.info.max_entries)
            for map_name, (count, most) in sorted(fill.items()):
                entries.add_metric([name, map_name], count)
                capacity.add_metric([name, map_name], most)
        yield from (dropped, entries, capacity, evictions)
        yield self._update_failure_metrics()

    def _update_failure_metrics(self) -> Metric:
        failures = counter(
            f"{PREFIX}_map_update_failures",
            "Map updates a program saw fail (a full hash map) and counted in the kernel "
            "(EXPORTER_UPDATE_FAILED): events it lost.",
            labels=["program", "map"],
        )
        for counts in self.update_failures:
            try:
                found = counts.read()
            except BPFError as err:
                log.warning('program "%s": cannot read failed map updates: %s', counts.program, err)
                continue
            for map_name, value in found.items():
                failures.add_metric([counts.program, map_name], value)
        return failures

    def _reload_metrics(self) -> Iterator[Metric]:
        successful = gauge(
            f"{PREFIX}_config_last_reload_successful",
            "Whether the last configuration reload attempt was successful.",
        )
        successful.add_metric([], 1 if self.last_reload_successful else 0)
        when = gauge(
            f"{PREFIX}_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload.",
        )
        when.add_metric([], self.last_reload_success_time)
        yield successful
        yield when

    def _build_metrics(self) -> Iterator[Metric]:
        build = gauge(f"{PREFIX}_build_info", "bcc_exporter version.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        if self.headers is None:
            return
        match = gauge(
            f"{PREFIX}_kernel_headers_match",
            "1 when the kernel headers programs compile against lay out core structs as the "
            "running kernel's BTF does; 0 when struct reads through them would be wrong.",
        )
        match.add_metric([], 1 if self.headers.matched else 0)
        info = gauge(
            f"{PREFIX}_kernel_headers_info",
            "The kernel headers programs are compiled against, and the running kernel.",
            labels=["path", "release", "kernel"],
        )
        info.add_metric(
            [
                self.headers.headers_path,
                self.headers.headers_release or "unknown",
                self.headers.kernel_release,
            ],
            1,
        )
        yield match
        yield info


class UpdateFailures:
    """One program's in-kernel count of failed map updates (programs/include/bcc_exporter.h).

    The maps the source counts are shown from the start, at 0, so that a first failure is an
    increase Prometheus sees, not a series appearing with its first value."""

    def __init__(self, program: LoadedProgram) -> None:
        self.program = program.name
        fd = program.maps.get(FAILURES_MAP)
        # Every program has the map (the prelude declares it); only those using it are read.
        self.counted = [name for name in program.counted_maps if name in program.maps]
        self.reader = MapReader(fd) if fd is not None and self.counted else None

    def read(self) -> dict[str, int]:
        found = dict.fromkeys(self.counted, 0)
        if self.reader is not None:
            found.update(by_map_name(self.reader))
        return found


def _v1_mapped(program: LoadedProgram) -> set[str]:
    """The functions v1 reported tags of: those of kprobes, kretprobes, tracepoints and
    raw_tracepoints (not perf_events targets)."""
    kinds = {"kprobe", "kretprobe", "tracepoint", "raw_tracepoint"}
    return {b.function for b in program.spec.program.probes if b.attach[0].kind in kinds}


def _run_stats(programs: Iterable[LoadedProgram]) -> Iterator[Metric]:
    """Kernel-side cost of each BPF program, counted while the daemon holds BPF_ENABLE_STATS."""
    labels = ["program", "function", "id"]
    count = counter(
        f"{PREFIX}_program_run_count", "Times the kernel ran a BPF program.", labels=labels
    )
    seconds = counter(
        f"{PREFIX}_program_run_seconds",
        "Time the kernel spent running a BPF program.",
        labels=labels,
    )
    missed = counter(
        f"{PREFIX}_program_recursion_misses",
        "Times the kernel skipped a BPF program because another BPF program was running on "
        "that CPU: events it never saw.",
        labels=labels,
    )
    for program in programs:
        for function, fd in program.functions.items():
            try:
                info = prog_info(fd)
            except BPFError as err:
                log.warning(
                    'program "%s": %s: cannot read run stats: %s', program.name, function, err
                )
                continue
            values = [program.name, function, str(info.id)]
            count.add_metric(values, info.run_cnt)
            seconds.add_metric(values, info.run_time_ns / 1e9)
            missed.add_metric(values, info.recursion_misses)
    yield count
    yield seconds
    yield missed


class ScrapeDurations:
    """bcc_exporter_scrape_duration_seconds: prometheus_client's Histogram with its default
    buckets, as a `Family` the fast path renders (the stock one costs ~10% of a small scrape).
    Without the stock one's `_created` series, as Go's client: it never changes."""

    BOUNDS = Histogram.DEFAULT_BUCKETS  # ends with +Inf
    LE = [floatToGoString(bound) for bound in BOUNDS]

    def __init__(self) -> None:
        self._counts = [0] * len(self.BOUNDS)
        self._sum = 0.0
        self._lock = threading.Lock()  # two encodings of one scrape may render at once

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._counts[bisect_left(self.BOUNDS, seconds)] += 1  # le: bound >= seconds
            self._sum += seconds

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for le, count in zip(self.LE, counts, strict=True):
            running += count
            cumulative.append((le, float(running)))
        yield Family(
            f"{PREFIX}_scrape_duration_seconds",
            "Time to collect and render one /metrics body; concurrent scrapes share bodies.",
            "histogram",
            series_text(()),
            [((), (cumulative, total))],
        )
