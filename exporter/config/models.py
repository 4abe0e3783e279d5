"""The one definition of the config: pydantic models (native format)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from ..probes import Probe, parse_probe
from ..workers.messages import CFLAG, CFLAG_RULE

NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
RESERVED_PREFIX = "exporter_"


def _probe(value: Any) -> Probe:
    if isinstance(value, Probe):
        return value
    if not isinstance(value, str):
        raise ValueError("a probe is a string such as tracepoint:block:block_rq_issue")
    return parse_probe(value)


ProbeField = Annotated[Probe, BeforeValidator(_probe), PlainSerializer(str)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DecoderSpec(BaseModel):
    """`{name: uint}`; decoder options (static_map, regexps, ...) sit beside the name."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def options(self) -> dict[str, Any]:
        return self.model_dump()


class Label(Strict):
    name: str = Field(pattern=NAME)
    size: int = Field(0, ge=0, description="bytes of the map key this label takes")
    padding: int = Field(0, ge=0, description="bytes skipped after the field")
    offset: int | None = Field(
        None,
        ge=0,
        description="where the field starts in the key (default: after the previous label "
        "and its padding); labels may share bytes, as k8s_namespace/k8s_pod/k8s_container "
        "all decode one cgroup id",
    )
    decoders: list[DecoderSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _size(self) -> Label:
        # A cpu label names the CPU of a per-CPU value: it takes no bytes of the key.
        if self.decoders[0].name == "cpu":
            if self.size or self.padding or self.offset is not None or len(self.decoders) > 1:
                raise ValueError(
                    "a cpu label takes no key bytes: no size, padding, offset or decoders"
                )
        elif self.size == 0:
            raise ValueError("size: required (bytes of the map key this label takes)")
        return self


class BpftraceMap(Strict):
    """The bpftrace map a metric exports, written by the translation of a `bpftrace:` program
    (exporter/bpftrace/): `snapshot` prints it as bpftrace prints its maps."""

    map: str = Field(pattern=r"^@[A-Za-z_0-9]*$")
    aggregation: Literal["count", "sum", "hist", "lhist", "min", "max", "avg", "value"]
    lhist: tuple[int, int, int] | None = Field(None, description="lhist()'s min, max and step")


class Metric(Strict):
    name: str = Field(pattern=NAME)
    help: str = Field(min_length=1)
    map: str = Field(min_length=1)
    labels: list[Label] = []
    bpftrace: BpftraceMap | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name.startswith(RESERVED_PREFIX):
            raise ValueError(f"names starting with {RESERVED_PREFIX!r} are the exporter's own")
        return name


class Counter(Metric):
    map: str | None = None  # type: ignore[assignment]
    perf_map: str | None = Field(
        None, description="a BPF_PERF_OUTPUT map: each event counts 1 under its decoded labels"
    )
    untyped: bool = Field(
        False,
        description="samples named as written (no _total added), typed untyped: how "
        "ebpf_exporter v1 exported counters whose names do not end in _total",
    )

    @model_validator(mode="after")
    def _map_or_perf_map(self) -> Counter:
        if (self.map is None) == (self.perf_map is None):
            raise ValueError("give exactly one of map (a map of counts) or perf_map (events)")
        return self


class Gauge(Metric):
    signed: bool = Field(
        False, description="values are 8-byte two's complement (bpftrace's min, max, avg)"
    )


# Buckets one histogram may have: each is a series per label set (exp2 needs 64 at most).
MAX_BUCKETS = 4096


class Histogram(Metric):
    bucket_type: Literal["exp2", "exp2zero", "linear", "fixed"]
    bucket_min: int = Field(0, ge=0)
    bucket_max: int | None = Field(None, ge=0)
    bucket_keys: list[int] | None = Field(None, max_length=MAX_BUCKETS)
    bucket_multiplier: float = Field(1.0, gt=0)
    sum_key: int | None = Field(
        None, description="bucket key whose value is the sum of observations, in raw units"
    )

    @model_validator(mode="after")
    def _buckets(self) -> Histogram:
        if not self.labels:
            raise ValueError("labels: a histogram needs at least its bucket label (the last one)")
        if self.bucket_type == "fixed":
            if not self.bucket_keys:
                raise ValueError("bucket_keys: required for bucket_type fixed")
            if sorted(set(self.bucket_keys)) != self.bucket_keys:
                raise ValueError("bucket_keys: must be strictly increasing")
        elif self.bucket_max is None:
            raise ValueError(f"bucket_max: required for bucket_type {self.bucket_type}")
        elif self.bucket_max < self.bucket_min:
            raise ValueError("bucket_max: must not be below bucket_min")
        elif self.bucket_max - self.bucket_min >= MAX_BUCKETS:
            raise ValueError(f"bucket_max: at most {MAX_BUCKETS} buckets from bucket_min")
        if self.sum_key is not None and self._is_bucket_key(self.sum_key):
            raise ValueError("sum_key: must not be one of the bucket keys")
        return self

    def _is_bucket_key(self, key: int) -> bool:
        if self.bucket_type == "fixed":
            return key in (self.bucket_keys or [])
        assert self.bucket_max is not None
        return self.bucket_min <= key <= self.bucket_max

    def bucket_keys_or_range(self) -> list[int]:
        if self.bucket_type == "fixed":
            return list(self.bucket_keys or [])
        assert self.bucket_max is not None
        return list(range(self.bucket_min, self.bucket_max + 1))


class Metrics(Strict):
    counters: list[Counter] = []
    gauges: list[Gauge] = []
    histograms: list[Histogram] = []

    def all(self) -> list[Metric]:
        return [*self.counters, *self.gauges, *self.histograms]


class ProbeBinding(Strict):
    """A C function and where it attaches; alternatives are tried in order (static first)."""

    function: str = Field(pattern=NAME)
    attach: list[ProbeField] = Field(min_length=1)

    @field_validator("attach", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Program(Strict):
    name: str = Field(pattern=NAME)
    namespace: str = Field("bcc", pattern=NAME, description="prefix of the metric names")
    code: str | None = None
    source: str | None = None
    cflags: list[str] = []
    kaddrs: list[str] = Field(
        [], description="kernel symbols whose address the C code gets as kaddr_<symbol>"
    )
    default: bool = Field(True, description="served when no config flag is given (built-ins)")
    reads_kernel_structs: str | None = Field(
        None,
        description="why the program must read kernel structs through header definitions; "
        "it is refused while the headers do not match the running kernel",
    )
    probes: list[ProbeBinding] = []
    metrics: Metrics = Metrics()

    @field_validator("cflags")
    @classmethod
    def _allowed_cflags(cls, cflags: list[str]) -> list[str]:
        # Checked when the file is read, so that --config.check refuses what the privileged
        # side would refuse to compile (it checks every job again).
        for flag in cflags:
            if not CFLAG.fullmatch(flag):
                raise ValueError(f"{flag!r} is not allowed ({CFLAG_RULE})")
        return cflags

    @model_validator(mode="after")
    def _code_or_source(self) -> Program:
        if (self.code is None) == (self.source is None):
            raise ValueError("give exactly one of code (inline C) or source (a file)")
        names = [m.name for m in self.metrics.all()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metrics: duplicate metric names {', '.join(dupes)}")
        return self


class ConfigFile(Strict):
    programs: list[Program] = Field(min_length=1)
