"""exporter.metrics.exposition: the fast path writes what prometheus_client writes, byte for byte.

prometheus_client is the reference: every body is compared with its stock encoder's rendering
of the same families (built the way program collectors built them before the fast path), in
every format and escaping scheme it negotiates, and parsed back with its parsers.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from exporter.metrics.exposition import Family, SeriesText, counter, gauge, go_float, plain, render
from exporter.metrics.self_metrics import ScrapeDurations

# Label values the format must escape, and ones it must not touch.
AWKWARD = ["back\\slash", "new\nline", 'quo"te', "ünïcödé ✓", "", "a,b=c}{"]

ACCEPTS = [
    "",
    "text/plain; version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=underscores",
    "text/plain;version=1.0.0;escaping=dots",
    "text/plain;version=1.0.0;escaping=values",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=1.0.0;escaping=values",
    # What Prometheus 2 sends.
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
]

COUNTER_SERIES = [
    (("read", "cat"), 0),
    (("write", "cat"), 17),
    (("close", AWKWARD[0]), 999_999),
    (("open", AWKWARD[1]), 1_000_000),
    (("mmap", AWKWARD[2]), 123_456_789),
    (("brk", AWKWARD[3]), 2**64 - 1),
    (("ioctl", AWKWARD[4]), 5),
    (("poll", AWKWARD[5]), 6),
]
# Label names out of order: both formats sort them, and `le` falls among them.
HISTOGRAM_NAMES = ["zone", "device", "op"]
BOUNDS = ["1e-06", "2e-06", "0.0001", "0.5", "1.0", "1024.0", "1.048576e+06"]


def histogram_value(base: int, with_sum: bool) -> tuple[list[tuple[str, float]], float | None]:
    counts = [base * i for i in range(len(BOUNDS) + 1)]
    return list(zip([*BOUNDS, "+Inf"], counts, strict=True)), 0.125 * base if with_sum else None


HISTOGRAM_SERIES = [
    (("z1", "vda", "read"), histogram_value(1, True)),
    (("z2", AWKWARD[1], AWKWARD[2]), histogram_value(300_000, True)),
    (("z3", "vdb", "write"), histogram_value(7, False)),
]


def fast_families() -> list[Metric]:
    """Program metrics as collectors make them now, around stock self metrics."""
    self_metric = GaugeMetricFamily("bcc_exporter_up", "Stock, before.", labels=["program"])
    self_metric.add_metric(["p"], 1)
    registry = CollectorRegistry()
    duration = Histogram(
        "bcc_exporter_scrape_duration_seconds", "Stock histogram.", registry=registry
    )
    duration.observe(0.02)
    return [
        self_metric,
        Family(
            "bcc_syscalls_total",
            'Help with \\ backslash, "quotes" and\na newline.',
            "counter",
            SeriesText(["syscall", "comm"]),
            COUNTER_SERIES,
        ),
        Family("bcc_empty_total", "No series yet.", "counter", SeriesText(["x"]), []),
        Family(
            "bcc_queue_depth", "A gauge.", "gauge", SeriesText(["cpu"]), [(("0",), 3), (("1",), 0)]
        ),
        Family("bcc_no_labels", "A gauge without labels.", "gauge", SeriesText([]), [((), 42)]),
        # A v1 counter named without _total (ebpf_exporter_oom_kills): untyped, name as written.
        Family("ebpf_exporter_oom_kills", "Untyped.", "unknown", SeriesText(["c"]), [(("x",), 2)]),
        Family(
            "bcc_latency_seconds",
            "A histogram.",
            "histogram",
            SeriesText(HISTOGRAM_NAMES),
            HISTOGRAM_SERIES,
        ),
        Family(
            "bcc_sizes_bytes",
            "Labels all before le.",
            "histogram",
            SeriesText(["dev"]),
            [(("vda",), histogram_value(2, True))],
        ),
        *registry.collect(),
    ]


def stock_families(fast: list[Metric]) -> list[Metric]:
    """The same samples, built with prometheus_client's families as before the fast path."""
    families: list[Metric] = []
    for family in fast:
        if not isinstance(family, Family):
            families.append(family)
            continue
        names = family.text.names
        if family.type == "histogram":
            histogram = HistogramMetricFamily(family.name, family.documentation, labels=names)
            for labels, (buckets, total) in family.series:
                histogram.add_metric(list(labels), buckets, total)
            families.append(histogram)
            continue
        kinds = {"counter": CounterMetricFamily, "unknown": UnknownMetricFamily}
        stock = kinds.get(family.type, GaugeMetricFamily)(
            family.name, family.documentation, labels=names
        )
        for labels, value in family.series:
            stock.add_metric(list(labels), value)
        families.append(stock)
    return families


class Registry:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


@pytest.mark.parametrize("accept", ACCEPTS)
def test_body_is_the_stock_encoders_byte_for_byte(accept: str) -> None:
    encoder, content_type = choose_encoder(accept)
    fast = fast_families()
    body, got_type = render(fast, accept)
    assert got_type == content_type
    assert body.decode() == encoder(Registry(stock_families(fast))).decode()


def test_text_parses_to_the_stock_families() -> None:
    fast = fast_families()
    body, _ = render(fast, "")
    stock, _ = choose_encoder("")
    expected = list(text_string_to_metric_families(stock(Registry(stock_families(fast))).decode()))
    got = list(text_string_to_metric_families(body.decode()))
    assert got == expected
    by_name = {f.name: f for f in got}
    assert by_name["bcc_syscalls"].type == "counter"
    assert len(by_name["bcc_syscalls"].samples) == len(COUNTER_SERIES)
    # 8 buckets a series, and _count and _sum only for the two with a sum.
    assert len(by_name["bcc_latency_seconds"].samples) == 3 * 8 + 2 * 2


def test_openmetrics_parses_to_the_stock_families() -> None:
    accept = "application/openmetrics-text; version=1.0.0"
    fast = fast_families()
    body, _ = render(fast, accept)
    stock, _ = choose_encoder(accept)
    expected = list(openmetrics_families(stock(Registry(stock_families(fast))).decode()))
    got = list(openmetrics_families(body.decode()))
    assert got == expected
    assert body.endswith(b"\n# EOF\n") and body.count(b"# EOF") == 1


def test_samples_are_the_stock_familys_when_asked_for() -> None:
    families = fast_families()
    for fast, stock in zip(families, stock_families(families), strict=True):
        assert (fast.name, fast.type, fast.samples) == (stock.name, stock.type, stock.samples)


def test_a_family_without_series_has_no_samples() -> None:
    family = Family("bcc_empty_total", "No series yet.", "counter", SeriesText(["x"]), [])
    assert family.name == "bcc_empty"
    assert family.samples == []
    assert (
        render([family], "")[0]
        == b"# HELP bcc_empty_total No series yet.\n# TYPE bcc_empty_total counter\n"
    )


@pytest.mark.parametrize("accept", ACCEPTS)
def test_exporter_families_are_the_stock_familys_byte_for_byte(accept: str) -> None:
    """gauge() and counter(), which the exporter's own metrics use, against the
    GaugeMetricFamily and CounterMetricFamily they replace: labelled, unlabelled, floats."""

    def families(make_gauge: Any, make_counter: Any) -> list[Metric]:
        runs = make_counter("bcc_exporter_program_run_count", "Runs.", labels=["program", "id"])
        seconds = make_gauge("bcc_exporter_collect_duration_seconds", "Took.", labels=["program"])
        build = make_gauge("bcc_exporter_config_last_reload_successful", "Reloaded.")
        for i, name in enumerate(AWKWARD):
            runs.add_metric([name, str(i)], 2**64 - 1 - i)
            seconds.add_metric([name], 0.000169793 * i)
        build.add_metric([], 1)
        return [runs, seconds, build]

    encoder, _ = choose_encoder(accept)
    stock = encoder(Registry(families(GaugeMetricFamily, CounterMetricFamily)))
    for _ in range(2):  # the second time, with the family headers cached
        assert render(families(gauge, counter), accept)[0].decode() == stock.decode()


def stock_only_families() -> list[Metric]:
    """Families the fast path must leave to the stock encoder, and plain ones it takes."""
    created = CounterMetricFamily("bcc_made", "With a created time.", created=1.5e9)
    created.add_metric([], 3, created=1.5e9)
    stamped = GaugeMetricFamily("bcc_stamped", "With a timestamp.", labels=["a"])
    stamped.add_metric(["x"], 1, timestamp=1.7e9)
    mixed = GaugeMetricFamily("bcc_mixed", "Label names differ between samples.")
    mixed.add_sample("bcc_mixed", {"a": "1"}, 1)
    mixed.add_sample("bcc_mixed", {"b": "2"}, 2)
    utf8 = GaugeMetricFamily("bcc.dotted", "A name legacy schemes rewrite.", labels=["x.y"])
    utf8.add_metric(["v"], 1)
    labelled = GaugeMetricFamily("bcc_plain", "Plain, labelled.", labels=["z", "a"])
    for i, value in enumerate(AWKWARD):
        labelled.add_metric([value, str(i)], i / 7)
    process = ProcessCollector(registry=None).collect()
    return [*process, created, stamped, mixed, utf8, labelled]


@pytest.mark.parametrize("accept", ACCEPTS)
def test_stock_families_render_as_the_stock_encoder_does(accept: str) -> None:
    encoder, _ = choose_encoder(accept)
    families = stock_only_families()
    assert render(families, accept)[0].decode() == encoder(Registry(families)).decode()


def test_only_plain_gauges_and_counters_take_the_fast_path() -> None:
    fast = {f.name for f in stock_only_families() if isinstance(plain(f), Family)}
    assert fast == {
        "bcc_plain",
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_cpu_seconds",
        "process_open_fds",
        "process_max_fds",
    }


@pytest.mark.parametrize("accept", ACCEPTS)
def test_scrape_durations_render_as_the_stock_histogram_without_created(accept: str) -> None:
    registry = CollectorRegistry()
    stock = Histogram(
        "bcc_exporter_scrape_duration_seconds",
        "Time to collect and render one /metrics body; concurrent scrapes share bodies.",
        registry=registry,
    )
    ours = ScrapeDurations()
    for seconds in (0.0001, 0.005, 0.0051, 0.3, 10.0, 11.0, 0.005):  # on bounds and between
        stock.observe(seconds)
        ours.observe(seconds)
    encoder, _ = choose_encoder(accept)
    expected = [
        line
        for line in encoder(registry).decode().splitlines(keepends=True)
        if "_created" not in line
    ]
    assert render(list(ours.collect()), accept)[0].decode() == "".join(expected)


@pytest.mark.parametrize(
    "value",
    [
        0,
        1,
        17,
        999_999,
        1_000_000,
        1_234_567,
        2**53 + 1,
        2**64 - 1,
        0.0,
        0.5,
        1e-06,
        2.5e7,
        float("inf"),
        -1,
        -3.5,
    ],
)
def test_numbers_print_as_floatToGoString_prints_them(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


def test_series_text_is_made_once_per_set_of_label_values() -> None:
    text = SeriesText(["b", "a"])
    first = text(("x", "y"))
    assert first == '{a="y",b="x"}'
    assert text(("x", "y")) is first
    assert text.bucket(("x", "y")) == ('{a="y",b="x",le="', '"} ')
    assert SeriesText(["z"]).bucket(("v",)) == ('{le="', '",z="v"} ')
    assert SeriesText([])(()) == ""


def test_series_texts_of_gone_series_leave_the_cache(monkeypatch):
    from exporter.metrics import exposition

    monkeypatch.setattr(exposition, "PRUNE_SLACK", 0)
    text = exposition.SeriesText(["comm"])
    for i in range(100):
        text((f"c{i}",))
    text.keep([((f"c{i}",), 1) for i in range(60)])  # not twice as many: kept
    assert len(text._text) == 100
    text.keep([(("c1",), 1), (("c2",), 1)])
    assert set(text._text) == {("c1",), ("c2",)}
    assert text(("c1",)) == '{comm="c1"}'
