"""bcc-tools style rendering of a program's metric families."""

import pytest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from exporter.arguments import parse_duration
from exporter.snapshot import render, samples


@pytest.mark.parametrize(
    "text, seconds", [("5s", 5.0), ("500ms", 0.5), ("2m", 120.0), ("3", 3.0), ("1.5s", 1.5)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_a_bad_duration_says_what_it_wants():
    with pytest.raises(ValueError, match=r"not a duration: '5 sec' \(e.g. 5s, 500ms, 2m\)"):
        parse_duration("5 sec")


def counters(values: dict[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily("bcc_syscalls", "System calls.", labels=["syscall"])
    for name, value in values.items():
        family.add_metric([name], value)
    return family


def test_counters_print_the_change_as_a_table_sorted_by_count():
    before = samples([counters({"read": 100, "write": 5, "close": 7})])
    after = counters({"read": 103, "write": 28, "close": 7, "openat": 11})
    assert render([after], before) == (
        "bcc_syscalls (System calls.)\n"
        "  SYSCALL  COUNT\n"
        "  write    23\n"
        "  openat   11\n"
        "  read     3\n"
    )


def latency(cumulative: list[float]) -> HistogramMetricFamily:
    family = HistogramMetricFamily("bcc_lat_seconds", "Latency.", labels=["op"])
    bounds = ["1e-06", "2e-06", "4e-06", "8e-06", "+Inf"]
    family.add_metric(["read"], list(zip(bounds, cumulative, strict=True)), None)
    return family


def test_histograms_print_log2_bars_of_the_change_in_usecs():
    before = samples([latency([0, 1, 1, 1, 1])])
    after = latency([0, 3, 23, 23, 23])
    assert render([after], before) == (
        "bcc_lat_seconds (Latency.)\n"
        "  op = read\n"
        "             usecs               : count     distribution\n"
        f"                          1 -> 2 : 2        |{'****':<40}|\n"
        f"                          2 -> 4 : 20       |{'*' * 40}|\n"
    )


def test_a_histogram_without_change_says_so():
    same = latency([0, 3, 23, 23, 23])
    assert render([same], samples([same])).endswith("    (no events)\n")


HOSTILE = "\x1b[2J\x1b]0;PWN\x07"  # clear the screen, retitle the window, ring the bell


def test_label_values_are_printed_escaped():
    """A process may name itself anything: its comm must not drive the admin's terminal."""
    text = render([counters({HOSTILE: 3, "tab\there": 2, "rlo\u202egpj.exe": 1})], {})
    assert "\x1b" not in text and "\x07" not in text and "\t" not in text
    assert "\u202e" not in text
    assert "  \\x1b[2J\\x1b]0;PWN\\x07  3\n" in text
    assert "  tab\\there" in text and "rlo\\u202egpj.exe" in text


def test_histogram_label_values_are_printed_escaped():
    family = HistogramMetricFamily("bcc_latency_seconds", "Latency.", labels=["comm"])
    family.add_metric([HOSTILE], [("0.001", 1.0), ("+Inf", 1.0)], sum_value=0.0005)
    text = render([family], {})
    assert "\x1b" not in text and "comm = \\x1b[2J\\x1b]0;PWN\\x07" in text
