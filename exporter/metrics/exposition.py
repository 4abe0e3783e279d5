"""/metrics bodies: program and exporter metrics written straight to text, the rest by
prometheus_client.

prometheus_client's encoders build a Sample namedtuple and a labels dict per series, then
sort, escape and format each of them on every scrape: ~3 µs a series, most of a 10k-series
scrape. A program metric here is a `Family`: its series are (label values, value) pairs, and
the `{name="value",...}` text of each distinct set of label values is made once and cached
(`SeriesText`), so a sample line costs one string join. The stock encoder stays the
reference and does everything the fast path does not:
- each family's `# HELP`/`# TYPE` lines are the stock encoder's output for the family
  without samples, so name munging (counters' `_total`) and help escaping are its own;
  (made once per format and cached: they change only with the configuration);
- `gauge()` and `counter()` make the exporter's own families the same way (a label set's
  text cached across scrapes by `series_text`);
- other stock gauges and counters with plain samples (process metrics) become a `Family` at
  render (`plain`); anything else is encoded by it whole;
- escaping schemes that rewrite legacy names (`dots`, `values`) use it for everything:
  a `Family` gives prometheus_client's samples when asked for them.
Sample lines are the same in both formats for names every scheme leaves alone (ours match
[a-zA-Z_][a-zA-Z0-9_]*): labels sorted by name, values escaped (\\, \n, "), numbers as Go
prints them; OpenMetrics adds `# EOF`. tests/unit/test_exposition.py compares both byte for byte.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeAlias

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from ..config.models import Counter
from .labels import CACHE_LIMIT, PRUNE_SLACK

Labels: TypeAlias = tuple[str, ...]
# A histogram series: cumulative (le, count) pairs ending with +Inf, and the sum (None: none).
HistogramValue: TypeAlias = tuple[list[tuple[str, float]], float | None]

OPENMETRICS = "application/openmetrics-text"
EOF = b"# EOF\n"
# Schemes under which legacy names print as they are, in both formats.
_FAST_ESCAPINGS = (UNDERSCORES, ALLOWUTF8)
# Names every escaping scheme leaves as they are: a family or label named otherwise stays stock.
LEGACY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Series rendered to text at a time: the body's peak is the bytes, not a str per line.
CHUNK = 4096


def go_float(value: float) -> str:
    """prometheus_client's floatToGoString, with a shortcut for the common small integer."""
    if value.__class__ is int and 0 <= value < 1_000_000:  # below Go's switch to exponents
        return f"{value}.0"
    return floatToGoString(value)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class SeriesText:
    """Label values -> the `{name="value",...}` text of their series, made once and cached.

    Histogram buckets need `le` among the others in name order: `bucket()` gives the text
    before and after it. Two encodings of one scrape may render at once: a race only makes
    the same text twice (single dict operations are atomic).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._order = sorted(range(len(self.names)), key=self.names.__getitem__)
        self._le_at = sum(1 for name in self.names if name < "le")
        self._text: dict[Labels, str] = {}
        self._bucket: dict[Labels, tuple[str, str]] = {}

    def keep(self, series: Sequence[tuple[Labels, Any]]) -> None:
        """Keep only the texts of these series (the metric's now) once the cache holds more
        than twice as many: series of keys gone from the map (ended processes, removed pods)
        would stay until CACHE_LIMIT. Each pruning costs a pass over the live series, and
        happens only after as many series again have come and gone. The dicts are replaced,
        not changed: a render reading the old ones meanwhile is not disturbed."""
        if max(len(self._text), len(self._bucket)) <= 2 * len(series) + PRUNE_SLACK:
            return
        self._text = {k: self._text[k] for k, _ in series if k in self._text}
        self._bucket = {k: self._bucket[k] for k, _ in series if k in self._bucket}

    def _pairs(self, values: Labels) -> list[str]:
        return [f'{self.names[i]}="{_escape(values[i])}"' for i in self._order]

    def __call__(self, values: Labels) -> str:
        try:
            return self._text[values]
        except KeyError:
            pass
        if len(self._text) >= CACHE_LIMIT:  # recycled ids would grow it without end
            self._text.clear()
        text = "{" + ",".join(self._pairs(values)) + "}" if values else ""
        self._text[values] = text
        return text

    def bucket(self, values: Labels) -> tuple[str, str]:
        """`{a="x",le="` and `",z="y"} `: a bucket line is head + bound + tail + count."""
        try:
            return self._bucket[values]
        except KeyError:
            pass
        if len(self._bucket) >= CACHE_LIMIT:
            self._bucket.clear()
        pairs = self._pairs(values)
        before, after = pairs[: self._le_at], pairs[self._le_at :]
        head = "{" + "".join(p + "," for p in before) + 'le="'
        tail = '"' + "".join("," + p for p in after) + "} "
        self._bucket[values] = head, tail
        return head, tail


def counter_type(config: Counter) -> str:
    """A counter's family type: "unknown" (untyped) for one configured `untyped`."""
    return "unknown" if config.untyped else "counter"


@functools.lru_cache(maxsize=256)
def series_text(names: Labels) -> SeriesText:
    """One SeriesText per set of label names, shared by every family with those names: the
    exporter's own families are made anew on every scrape, their label texts need not be."""
    return SeriesText(names)


class Family(Metric):
    """A program's counter, gauge or histogram; `samples` are made only when something
    other than `render` asks for them (the stock encoder, `snapshot`)."""

    _samples: list[Sample] | None = None

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        text: SeriesText,
        series: Sequence[tuple[Labels, Any]],
    ) -> None:
        # CounterMetricFamily's rule: the family is named without `_total`, its samples with.
        if typ == "counter" and name.endswith("_total"):
            name = name[:-6]
        super().__init__(name, documentation, typ)
        self.text = text
        self.series = series

    def add_metric(self, values: Sequence[str], value: float) -> None:
        """As GaugeMetricFamily's: a series of a family made by `gauge()` or `counter()`."""
        assert isinstance(self.series, list)
        self.series.append((tuple(values), value))

    @property  # type: ignore[override]
    def samples(self) -> list[Sample]:
        if self._samples is None:
            self._samples = self._stock().samples
        return self._samples

    @samples.setter
    def samples(self, samples: list[Sample]) -> None:
        # Metric.__init__ sets [] before there are series: made on first use instead.
        self._samples = samples or None

    def _stock(self) -> Metric:
        names = self.text.names
        if self.type == "histogram":
            histogram = HistogramMetricFamily(self.name, self.documentation, labels=names)
            for labels, (buckets, total) in self.series:
                histogram.add_metric(list(labels), buckets, total)
            return histogram
        kinds = {"counter": CounterMetricFamily, "unknown": UnknownMetricFamily}
        family = kinds.get(self.type, GaugeMetricFamily)(
            self.name, self.documentation, labels=names
        )
        for labels, value in self.series:
            family.add_metric(list(labels), value)
        return family

    def lines(self) -> Iterator[bytes]:
        """The sample lines, as the stock encoders print them for names left as they are,
        encoded CHUNK series at a time: a 1M-series family never exists as 1M strings."""
        series = self.series
        for start in range(0, len(series), CHUNK):
            chunk = series[start : start + CHUNK]
            if self.type == "histogram":
                yield "".join(self._histogram_lines(chunk)).encode()
            else:
                yield self._sample_lines(chunk).encode()

    def _sample_lines(self, series: Sequence[tuple[Labels, Any]]) -> str:
        text = self.text
        name = self.name + "_total" if self.type == "counter" else self.name
        return "".join([f"{name}{text(labels)} {go_float(value)}\n" for labels, value in series])

    def _histogram_lines(self, series: Sequence[tuple[Labels, HistogramValue]]) -> Iterator[str]:
        text = self.text
        bucket, count, total = self.name + "_bucket", self.name + "_count", self.name + "_sum"
        for labels, (buckets, sum_value) in series:
            head, tail = text.bucket(labels)
            prefix = bucket + head
            yield "".join([f"{prefix}{le}{tail}{go_float(n)}\n" for le, n in buckets])
            # HistogramMetricFamily: _count (the +Inf bucket) and _sum only with a sum.
            if sum_value is not None and float(buckets[0][0]) >= 0:
                labelled = text(labels)
                yield f"{count}{labelled} {go_float(buckets[-1][1])}\n"
                yield f"{total}{labelled} {go_float(sum_value)}\n"


def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Family:
    """An empty gauge family to add series to, rendered as GaugeMetricFamily's would be."""
    return Family(name, documentation, "gauge", series_text(tuple(labels)), [])


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Family:
    """An empty counter family (named without `_total`, its samples with), as
    CounterMetricFamily's."""
    return Family(name, documentation, "counter", series_text(tuple(labels)), [])


def plain(family: Metric) -> Metric:
    """A stock gauge or counter as a `Family` when its samples are plain (the family's own
    name, the same label names in the same order, no timestamp or exemplar: what
    ProcessCollector and GaugeMetricFamily make); anything else as it is."""
    kinds = {"gauge": "", "counter": "_total"}
    if family.type not in kinds or not LEGACY_NAME.fullmatch(family.name):
        return family
    sample_name = family.name + kinds[family.type]
    names = tuple(family.samples[0].labels) if family.samples else ()
    series = []
    for sample in family.samples:
        if (
            sample.name != sample_name
            or tuple(sample.labels) != names
            or sample.timestamp is not None
            or sample.exemplar is not None
            or sample.native_histogram is not None
        ):
            return family
        series.append((tuple(sample.labels.values()), sample.value))
    if not all(LEGACY_NAME.fullmatch(name) for name in names):
        return family
    return Family(family.name, family.documentation, family.type, series_text(names), series)


class _Families:
    """What the stock encoders take: something with collect()."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def render(families: Sequence[Metric], accept: str) -> tuple[bytes, str]:
    """The body for an Accept header and its content type, as prometheus_client negotiates."""
    stock, content_type = choose_encoder(accept)
    escaping = UNDERSCORES
    for part in content_type.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "escaping":
            escaping = value
    if escaping not in _FAST_ESCAPINGS:
        return stock(_Families(families)), content_type
    openmetrics = content_type.startswith(OPENMETRICS)
    out: list[bytes] = []
    for family in families:
        if not isinstance(family, Family):
            family = plain(family)
        if isinstance(family, Family):
            out.append(_header(stock, content_type, family))
            out.extend(family.lines())
        else:
            out.append(_strip_eof(stock(_Families([family])), openmetrics))
    if openmetrics:
        out.append(EOF)
    return b"".join(out), content_type


# (content type, family name, help, type) -> the family's `# HELP`/`# TYPE` lines; emptied
# at this many (families of configurations reloaded away): far more than a configuration has.
HEADER_LIMIT = 4096
_headers: dict[tuple[str, str, str, str], bytes] = {}


def _header(stock: Callable[..., bytes], content_type: str, family: Family) -> bytes:
    """A family's `# HELP`/`# TYPE` lines: the stock encoder's for the family without
    samples, made once per format. Keyed by the content type, which names the format, version
    and escaping (the encoder itself is a new partial on every negotiation)."""
    key = (content_type, family.name, family.documentation, family.type)
    try:
        return _headers[key]
    except KeyError:
        pass
    if len(_headers) >= HEADER_LIMIT:
        _headers.clear()
    header = Metric(family.name, family.documentation, family.type)
    text = _strip_eof(stock(_Families([header])), content_type.startswith(OPENMETRICS))
    _headers[key] = text
    return text


def _strip_eof(body: bytes, openmetrics: bool) -> bytes:
    return body[: -len(EOF)] if openmetrics else body
