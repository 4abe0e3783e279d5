"""exporter.bpftrace.output: maps printed byte for byte as bpftrace 0.17 printed them here.

bpftrace_exit.txt is what `bpftrace -e SCRIPT` (SCRIPT below) printed when it exited, captured
on the test machine; the same maps, as the exporter reads them, must print the same."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from exporter.bpftrace.metrics import HIST_BOUNDS
from exporter.bpftrace.output import PrintedMap, printed_maps, render
from exporter.config.models import Program

SCRIPT = """BEGIN {
    @opens["bash", 3] = count(); @opens["cat", 12] = count(); @opens["cat", 12] = count();
    @opens["ls", -4] = count(); @opens["ls", -4] = count(); @opens["ls", -4] = count();
    @bytes = sum(123456);
    @h = hist(-5); @h = hist(0); @h = hist(1); @h = hist(1); @h = hist(3); @h = hist(3);
    @h = hist(3); @h = hist(1500); @h = hist(5000000);
    @l[7] = lhist(250, 100, 1000, 100); @l[7] = lhist(250, 100, 1000, 100);
    @l[7] = lhist(520, 100, 1000, 100); @l[7] = lhist(2048, 100, 1000, 100);
    @l[3] = lhist(5, 100, 1000, 100);
    @mean = avg(10); @mean = avg(-30); @top = max(42);
    exit();
}"""
PRINTED = (Path(__file__).parent / "bpftrace_exit.txt").read_text()


def buckets(size: int, **counts: int) -> list[int]:
    out = [0] * size
    for index, count in counts.items():
        out[int(index[1:])] = count
    return out


def test_maps_print_as_bpftrace_printed_them() -> None:
    head = "Attaching 1 probe...\n\n\n"
    assert PRINTED.startswith(head)
    hist = buckets(34, i0=1, i1=1, i2=2, i3=3, i12=1, i24=1)  # [1K, 2K) is 12, [4M, 8M) 24
    maps = [
        PrintedMap("@top", "max", [((), 42)]),
        PrintedMap("@opens", "count", [(("cat", "12"), 2), (("ls", "-4"), 3), (("bash", "3"), 1)]),
        PrintedMap("@bytes", "sum", [((), 123456)]),
        PrintedMap("@h", "hist", [((), hist)]),
        PrintedMap(
            "@l",
            "lhist",
            [(("7",), buckets(11, i2=2, i5=1, i10=1)), (("3",), buckets(11, i0=1))],
            (100, 1000, 100),
        ),
        PrintedMap("@mean", "avg", [((), -10)]),
    ]
    assert render(maps) == PRINTED[len(head) :]


def test_the_window_of_exported_metrics_becomes_bpftrace_maps() -> None:
    program = Program.model_validate(
        {
            "name": "p",
            "code": "",
            "metrics": {
                "counters": [
                    {
                        "name": "p_opens_total",
                        "help": "h",
                        "map": "at_opens",
                        "labels": [{"name": "comm", "size": 16, "decoders": [{"name": "string"}]}],
                        "bpftrace": {"map": "@opens", "aggregation": "count"},
                    }
                ],
                "histograms": [
                    {
                        "name": "p_h",
                        "help": "h",
                        "map": "at_h",
                        "labels": [{"name": "bucket", "size": 8, "decoders": [{"name": "uint"}]}],
                        "bucket_type": "fixed",
                        "bucket_keys": HIST_BOUNDS,
                        "bpftrace": {"map": "@h", "aggregation": "hist"},
                    }
                ],
            },
        }
    )
    opens = CounterMetricFamily("bcc_p_opens", "h", labels=["comm"])
    opens.add_metric(["cat"], 5)
    opens.add_metric(["ls"], 3)
    h = HistogramMetricFamily("bcc_p_h", "h")
    cumulative = [0, 0, 1, *[4] * 31]  # le 0, 1, 2, 4, ... 2^31, then +Inf
    bounds = [*(str(float(b)) for b in HIST_BOUNDS), "+Inf"]
    h.add_metric([], list(zip(bounds, cumulative, strict=True)), None)
    before = {("bcc_p_opens_total", (("comm", "cat"),)): 4.0}
    found = printed_maps("bcc", program.metrics.all(), [opens, h], before)
    # The window: cat's 1 open and ls's 3; the histogram's [1] 1 and [2, 4) 3.
    assert render(found) == (
        "@h: \n"
        "[1]                    1 |@@@@@@@@@@@@@@@@@                                   |\n"
        "[2, 4)                 3 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|\n"
        "\n"
        "@opens[cat]: 1\n"
        "@opens[ls]: 3\n"
    )
