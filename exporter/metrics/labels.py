"""Key (or event) bytes -> label values: the layout of the labels and a cache of decoded keys."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..config.models import Label
from ..config.models import Metric as MetricConfig
from ..decoders import Chain, DecoderError, SkipSeries, Unresolved, build_chain
from ..errors import LoadError

log = logging.getLogger(__name__)

# Decoded-label cache entries per metric before it starts over (recycled ids would grow it).
CACHE_LIMIT = 200_000
# A cache holding more than twice the keys a collection read, plus this, holds mostly keys
# gone from the map (processes, pods that ended): it is pruned to the live ones.
PRUNE_SLACK = 1024
# How long a label a decoder could not resolve yet (Unresolved) is shown before asking again.
UNRESOLVED_SECONDS = 30.0
# How final a decoding is: cached for good, shown until UNRESOLVED_SECONDS, or not cached.
_FINAL, _PROVISIONAL, _FAILED = "final", "provisional", "failed"


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    chain: Chain

    def decode(self, raw: bytes) -> str:
        return self.chain.decode(raw[self.offset : self.offset + self.size])


def is_cpu_label(label: Label) -> bool:
    return label.decoders[0].name == "cpu"


def layout(program: str, where: str, metric: MetricConfig) -> tuple[list[Field], int]:
    """The fields of the metric's (non-cpu) labels, in order, and how many bytes they span."""
    fields, offset, span = [], 0, 0
    for i, label in enumerate(metric.labels):
        if is_cpu_label(label):
            continue
        try:
            chain = build_chain([d.options for d in label.decoders], label.size)
        except DecoderError as err:
            raise LoadError(
                program,
                f"{where}.labels[{i}].decoders: metric {metric.name}, label {label.name}: {err}",
            ) from None
        start = offset if label.offset is None else label.offset
        fields.append(Field(label.name, start, label.size, chain))
        offset = start + label.size + label.padding
        span = max(span, offset)
    return fields, span


class LabelDecoder:
    """Label values of raw bytes, decoded once per distinct prefix and cached.

    Callers serialize calls (the program's collection lock): the cache is not locked itself.
    """

    def __init__(self, where: str, fields: list[Field], span: int) -> None:
        self.where = where
        self.fields = fields
        self.span = span
        self.errors = 0
        self._cache: dict[bytes, tuple[str, ...] | None] = {}
        # While a collection prunes: the cache before it, whose entries move back to _cache
        # as their keys are met; what is left at its end is of keys gone (see begin()).
        self._old: dict[bytes, tuple[str, ...] | None] = {}
        self._unresolved: dict[bytes, tuple[float, tuple[str, ...]]] = {}

    def begin(self, live: int) -> None:
        """A collection of the map starts; the one before read `live` keys. Keys gone from the
        map (ended processes, removed cgroups) would stay cached until CACHE_LIMIT: when the
        cache holds more than twice the live keys, this collection keeps only the keys it
        meets. Amortized: each pruning costs one move per live key, and happens only after
        as many keys again have come and gone."""
        if not self._old and len(self._cache) > 2 * live + PRUNE_SLACK:
            self._old, self._cache = self._cache, {}

    def end(self) -> None:
        """The collection read the whole map: what it did not meet is gone."""
        self._old = {}
        if len(self._unresolved) > PRUNE_SLACK:  # asked again once due anyway: drop the due
            now = time.monotonic()
            self._unresolved = {k: v for k, v in self._unresolved.items() if v[0] > now}

    def __call__(self, raw: bytes, remember: bool = True) -> tuple[str, ...] | None:
        """The label values, or None when a decoder drops the series or cannot decode it.

        `remember=False` decodes without caching the result: keys past the series limit
        would otherwise evict the kept series' labels and make every scrape decode anew."""
        prefix = raw[: self.span]
        try:
            return self._cache[prefix]
        except KeyError:
            pass
        if prefix in self._old:
            result = self._cache[prefix] = self._old.pop(prefix)
            return result
        retry_at = self._unresolved.get(prefix)
        if retry_at is not None and time.monotonic() < retry_at[0]:
            return retry_at[1]
        if not remember:
            return self._decode(prefix)[0]
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
            self._unresolved.clear()
        result, outcome = self._decode(prefix)
        if outcome is _FAILED:
            return None  # not cached: counted again each time it is seen
        if result is not None and outcome is _PROVISIONAL:
            # Shown for now, asked again later: the host may know it by then (a new cgroup).
            self._unresolved[prefix] = (time.monotonic() + UNRESOLVED_SECONDS, result)
        else:  # final, or None: a decoder dropped the series for good
            self._cache[prefix] = result
            self._unresolved.pop(prefix, None)
        return result

    def _decode(self, prefix: bytes) -> tuple[tuple[str, ...] | None, str]:
        """The label values (None: a decoder drops the series) and how final they are."""
        outcome = _FINAL
        values: list[str] = []
        try:
            for field in self.fields:
                try:
                    values.append(field.decode(prefix))
                except Unresolved as provisional:
                    values.append(provisional.value.decode("utf-8", "replace"))
                    outcome = _PROVISIONAL
        except SkipSeries:
            return None, _FINAL
        except Exception as err:  # noqa: BLE001 - one bad key must not cost the scrape
            self.errors += 1
            log.debug("%s: cannot decode %s: %s", self.where, prefix.hex(), err)
            return None, _FAILED
        return tuple(values), outcome
