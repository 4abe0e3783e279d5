"""exporter.metrics.histogram: which `le` each kernel bucket key means, and the cumulative series.

Pins the log2 slot -> `le` mapping that was off by one in bcc (#1649) and ebpf_exporter (#488):
known values go through a Python copy of bcc's own bpf_log2l, not through a formula for it.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from exporter.config.models import Histogram
from exporter.metrics.histogram import Buckets, upper_bound


def bpf_log2(v: int) -> int:
    """bcc's src/cc/export/helpers.h bpf_log2, on an unsigned int, line for line."""
    v &= 0xFFFFFFFF
    r = int(v > 0xFFFF) << 4
    v >>= r
    shift = int(v > 0xFF) << 3
    v >>= shift
    r |= shift
    shift = int(v > 0xF) << 2
    v >>= shift
    r |= shift
    shift = int(v > 0x3) << 1
    v >>= shift
    r |= shift
    r |= v >> 1
    return r


def bpf_log2l(v: int) -> int:
    """bcc's bpf_log2l, on an unsigned long."""
    hi = (v >> 32) & 0xFFFFFFFF
    if hi:
        return bpf_log2(hi) + 32 + 1
    return bpf_log2(v) + 1


def histogram(**overrides: Any) -> Histogram:
    h: dict[str, Any] = {
        "name": "lat",
        "help": "h",
        "map": "m",
        "bucket_type": "exp2",
        "bucket_min": 0,
        "bucket_max": 64,
        "labels": [{"name": "bucket", "size": 4, "decoders": [{"name": "uint"}]}],
    }
    h.update(overrides)
    return Histogram.model_validate(h)


def buckets(**overrides: Any) -> Buckets:
    return Buckets.from_config(histogram(**overrides))


def first_le_counting(b: Buckets, key: int) -> tuple[float, float]:
    """(previous le, le) of the first bucket that counts one observation stored under `key`."""
    series, _ = b.render({key: 1})
    les = [-math.inf] + [float(le) for le, _ in series]
    i = next(i for i, (_, count) in enumerate(series) if count == 1)
    assert all(count == 1 for _, count in series[i:]), "cumulative: every later bucket counts it"
    return les[i], les[i + 1]


# --- bcc's bpf_log2l itself -------------------------------------------------------------------


def test_bpf_log2l_copy_matches_bcc_issue_1649_table() -> None:
    # iovisor/bcc#1649: 0 -> 1, 1 -> 1, 2 -> 2, 4 -> 3, 2^32 -> 33, 2^33 -> 34, 2^63 -> 64
    table = {0: 1, 1: 1, 2: 2, 4: 3, 2**32: 33, 2**33: 34, 2**63: 64}
    assert {v: bpf_log2l(v) for v in table} == table


def test_bpf_log2l_is_bit_length_except_at_zero() -> None:
    """floor(log2(v)) + 1 for v >= 1; 0 goes to slot 1 too, so slot 0 is never written."""
    for v in range(1, 5000):
        assert bpf_log2l(v) == math.floor(math.log2(v)) + 1, v
    for v in (2**j + d for j in range(13, 65) for d in (-1, 0, 1) if 2**j + d < 2**64):
        assert bpf_log2l(v) == v.bit_length(), v  # exact where float log2 rounds
    assert bpf_log2l(0) == 1


# --- exp2: the le each value lands in -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "slot", "le"),
    [
        (0, 1, "2.0"),
        (1, 1, "2.0"),
        (2, 2, "4.0"),
        (3, 2, "4.0"),
        (4, 3, "8.0"),
        (7, 3, "8.0"),
        (8, 4, "16.0"),
        (1000, 10, "1024.0"),
        (2**20, 21, "2.097152e+06"),
    ],
)
def test_exp2_known_values_land_in_known_le(value: int, slot: int, le: str) -> None:
    b = buckets()
    assert bpf_log2l(value) == slot
    series, _ = b.render({bpf_log2l(value): 1})
    first = next(bound for bound, count in series if count == 1)
    assert first == le


def test_exp2_every_value_lands_in_the_bucket_that_contains_it() -> None:
    """le(slot) > v >= le(slot - 1): never counted below its value (ebpf_exporter #488), and
    counted from the first bound above it. A value exactly on a bound 2^j (an integer quantity;
    a truncated duration there stands for [2^j, 2^j + 1)) is counted from le 2^(j+1) up.
    v = 0 is the exception: bpf_log2l(0) is 1, so it is counted from le 2, not le 1."""
    b = buckets()
    values = [1, 2, 3, 4, 7, 8, 1000, 2**20, *range(1, 5000)]
    values += [2**j + d for j in range(13, 64) for d in (-1, 0, 1)]
    for v in values:
        previous, le = first_le_counting(b, bpf_log2l(v))
        assert previous <= v < le, (v, previous, le)
    assert first_le_counting(b, bpf_log2l(0)) == (1.0, 2.0)


def test_exp2_slot_k_is_le_2_to_the_k() -> None:
    b = buckets()
    assert b.keys == tuple(range(65))
    assert b.bounds[:4] == ("1.0", "2.0", "4.0", "8.0")
    assert b.bounds[10] == "1024.0"
    assert b.bounds[64] == "1.8446744073709552e+19"
    assert all(float(le) == 2.0**k for k, le in zip(b.keys, b.bounds, strict=True))


def test_exp2_slot_0_stays_empty_with_bpf_log2l() -> None:
    assert bpf_log2l(0) == bpf_log2l(1) == 1
    series, _ = buckets(bucket_max=3).render({1: 12})
    assert series == [("1.0", 0.0), ("2.0", 12.0), ("4.0", 12.0), ("8.0", 12.0), ("+Inf", 12.0)]


def test_exp2_microseconds_as_seconds() -> None:
    """biolatency's layout: bpf_log2l(usecs), slots 0..26, multiplier 1e-6."""
    b = buckets(bucket_max=26, bucket_multiplier=0.000001)
    assert b.bounds[:8] == (
        "1e-06",
        "2e-06",
        "4e-06",
        "8e-06",
        "1.6e-05",
        "3.2e-05",
        "6.4e-05",
        "0.000128",
    )
    assert b.bounds[20] == "1.048576"
    assert b.bounds[-1] == "67.108864"
    # A 10 ms sleep is 10000 us: slot 14, counted from le 2^14 us = 0.016384 s.
    series, _ = b.render({bpf_log2l(10_000): 23})
    assert dict(series)["0.008192"] == 0
    assert dict(series)["0.016384"] == 23


# --- exp2zero, linear, fixed ------------------------------------------------------------------


def test_exp2zero_bounds() -> None:
    b = buckets(bucket_type="exp2zero", bucket_max=5)
    assert b.bounds == ("0.0", "1.0", "2.0", "4.0", "8.0", "16.0")
    assert [upper_bound("exp2zero", k) for k in range(4)] == [0.0, 1.0, 2.0, 4.0]


def test_exp2zero_values_rounded_up_to_a_power_of_two() -> None:
    """Programs for exp2zero keep 0 apart and store ceil(log2(v)) + 1 for v >= 1."""
    b = buckets(bucket_type="exp2zero", bucket_max=12)
    for v in range(2049):
        key = 0 if v == 0 else (v - 1).bit_length() + 1
        previous, le = first_le_counting(b, key)
        assert previous < v <= le, (v, previous, le)


def test_linear_bounds_and_values_rounded_up() -> None:
    b = buckets(bucket_type="linear", bucket_min=0, bucket_max=4)
    assert b.bounds == ("0.0", "1.0", "2.0", "3.0", "4.0")
    series, _ = b.render({0: 1, 2: 2, 4: 3, 9: 5})
    assert series == [
        ("0.0", 1.0),
        ("1.0", 1.0),
        ("2.0", 3.0),
        ("3.0", 3.0),
        ("4.0", 6.0),
        ("+Inf", 11.0),
    ]


def test_linear_with_a_step_multiplier() -> None:
    """key = ceil(v / 10): le = key * 10 as the operator wrote it, not a binary product."""
    b = buckets(bucket_type="linear", bucket_min=1, bucket_max=3, bucket_multiplier=0.1)
    assert b.bounds == ("0.1", "0.2", "0.3")  # 3 * 0.1 is 0.30000000000000004 in binary


def test_fixed_bounds_in_seconds() -> None:
    b = buckets(
        bucket_type="fixed",
        bucket_keys=[100, 1000, 250000, 1000000, 2500000],
        bucket_multiplier=0.000001,
    )
    # 100 * 1e-06 is 9.999999999999999e-05 in binary; a le="0.0001" selector must match.
    assert b.bounds == ("0.0001", "0.001", "0.25", "1.0", "2.5")


def test_fixed_nanoseconds_as_seconds() -> None:
    b = buckets(bucket_type="fixed", bucket_keys=[3, 100, 2**40], bucket_multiplier=1e-9)
    assert b.bounds == ("3e-09", "1e-07", "1099.511627776")


def test_fixed_keys_between_below_and_above_the_bounds() -> None:
    b = buckets(bucket_type="fixed", bucket_keys=[100, 1000, 250000])
    counts = {
        5: 1,  # below the first bound: counts in the first
        100: 2,  # on a bound
        101: 4,  # between bounds: the next bound up
        999: 8,
        1000: 16,
        250000: 32,
        250001: 64,  # above the last: +Inf only
    }
    series, total = b.render(counts)
    assert series == [
        ("100.0", 3.0),
        ("1000.0", 3.0 + 4 + 8 + 16),
        ("250000.0", 31.0 + 32),
        ("+Inf", 63.0 + 64),
    ]
    assert total is None


def test_exp2_keys_below_min_and_above_max() -> None:
    b = buckets(bucket_min=3, bucket_max=5)
    assert b.bounds == ("8.0", "16.0", "32.0")
    series, _ = b.render({1: 1, 2: 2, 3: 4, 5: 8, 6: 16, 30: 32})
    assert series == [("8.0", 7.0), ("16.0", 7.0), ("32.0", 15.0), ("+Inf", 63.0)]


# --- cumulative counts, +Inf, sum -------------------------------------------------------------


def test_counts_are_cumulative_and_inf_is_the_total() -> None:
    counts = {1: 2, 2: 3, 5: 7, 9: 11}
    series, _ = buckets(bucket_max=6).render(counts)
    assert series == [
        ("1.0", 0.0),
        ("2.0", 2.0),
        ("4.0", 5.0),
        ("8.0", 5.0),
        ("16.0", 5.0),
        ("32.0", 12.0),
        ("64.0", 12.0),
        ("+Inf", 23.0),
    ]
    assert series[-1] == ("+Inf", float(sum(counts.values())))
    assert [c for _, c in series] == sorted(c for _, c in series)


def test_missing_buckets_are_backfilled_with_zero() -> None:
    series, total = buckets(bucket_max=2, sum_key=255).render({})
    assert series == [("1.0", 0.0), ("2.0", 0.0), ("4.0", 0.0), ("+Inf", 0.0)]
    assert total == 0.0


def test_sum_key_is_the_sum_and_not_a_bucket() -> None:
    b = buckets(bucket_max=26, bucket_multiplier=0.000001, sum_key=255)
    series, total = b.render({bpf_log2l(3): 1, bpf_log2l(1500): 1, 255: 1503})
    assert series[-1] == ("+Inf", 2.0)
    assert total == pytest.approx(0.001503, rel=1e-12)


def test_without_sum_key_there_is_no_sum() -> None:
    """Never a silent 0: no sum kept means None (no _sum), and key 255 is just above max."""
    b = buckets(bucket_max=26)
    assert b.sum_key is None
    series, total = b.render({bpf_log2l(3): 1, 255: 1503})
    assert total is None
    assert series[-1] == ("+Inf", 1504.0)
    assert series[-2] == ("6.7108864e+07", 1.0)


def test_render_does_not_change_its_input() -> None:
    counts = {1: 2, 255: 9}
    buckets(bucket_max=3, sum_key=255).render(counts)
    assert counts == {1: 2, 255: 9}
