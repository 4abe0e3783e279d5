"""Bucket keys of a kernel histogram map -> Prometheus `le` bounds, cumulative counts and sum.

What each bucket key means (values in raw units, before bucket_multiplier):
- exp2: key k holds values < 2^k, exported as le 2^k. This is bcc's `bpf_log2l(v)` slot layout:
  slot k >= 1 holds 2^(k-1) <= v <= 2^k - 1, and slot 1 also holds v = 0 (bpf_log2l(0) is 1, bcc
  #1649), so slot 0 stays empty. A raw value truncated from a finer unit (ns / 1000) stands for
  [v, v + 1), so a slot holds exactly [2^(k-1), 2^k) of the true value; an integer quantity at
  exactly 2^(k-1) is counted from le 2^k up, not in le 2^(k-1).
- exp2zero: key 0 holds only 0 (le 0), key k >= 1 holds values <= 2^(k-1): for programs that
  store zero apart and round up to the next power of two.
- linear: key k holds values <= k: the program must round up (key = (v + step - 1) / step).
- fixed: the key is the bound itself (bucket_keys lists them).
A key between bounds counts in the next bound up, keys below the first bucket in the first
(their values are smaller still), keys above the last only in +Inf. `_sum` comes from `sum_key`
when the program keeps one.
`le` = bound * bucket_multiplier, multiplied in decimal: 100 * 1e-06 is "0.0001", not the binary
product "9.999999999999999e-05" that a `le="0.0001"` selector would miss.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client.utils import floatToGoString

from ..config.models import Histogram


def upper_bound(bucket_type: str, key: int) -> float:
    if bucket_type == "exp2":
        return float(2**key)
    if bucket_type == "exp2zero":
        return 0.0 if key == 0 else float(2 ** (key - 1))
    return float(key)


@dataclass(frozen=True)
class Buckets:
    keys: tuple[int, ...]
    bounds: tuple[str, ...]  # `le` label values, formatted once
    multiplier: float
    sum_key: int | None

    @classmethod
    def from_config(cls, histogram: Histogram) -> Buckets:
        keys = tuple(histogram.bucket_keys_or_range())
        mult = histogram.bucket_multiplier
        decimal_mult = Decimal(repr(mult))
        bounds = tuple(
            floatToGoString(float(Decimal(upper_bound(histogram.bucket_type, k)) * decimal_mult))
            for k in keys
        )
        return cls(keys, bounds, mult, histogram.sum_key)

    def render(self, counts: Mapping[int, int]) -> tuple[list[tuple[str, float]], float | None]:
        """Cumulative (le, count) pairs ending with +Inf, and the sum (None when not kept).
        Counts stay ints: exposition prints small ones without going through float."""
        per_bucket = [0] * (len(self.keys) + 1)  # the extra slot is +Inf only
        for key, count in counts.items():
            if key != self.sum_key:
                # The first bucket whose bound is >= the key holds it (fixed keys may skip some).
                per_bucket[bisect_left(self.keys, key)] += count
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, "+Inf"), per_bucket, strict=True):
            running += count
            buckets.append((bound, running))
        total = None if self.sum_key is None else counts.get(self.sum_key, 0) * self.multiplier
        return buckets, total
