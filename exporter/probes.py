"""The probe vocabulary of bpftrace and BCC (`tracepoint:block:block_rq_issue`, ...), parsed."""

from __future__ import annotations

from dataclasses import dataclass

# perf_event_open(2) PERF_COUNT_SW_* / PERF_COUNT_HW_* configs, with bpftrace's short aliases.
SOFTWARE_EVENTS = {
    "cpu-clock": 0,
    "cpu": 0,
    "task-clock": 1,
    "page-faults": 2,
    "faults": 2,
    "context-switches": 3,
    "cs": 3,
    "cpu-migrations": 4,
    "migrations": 4,
    "minor-faults": 5,
    "major-faults": 6,
    "alignment-faults": 7,
    "emulation-faults": 8,
    "dummy": 9,
}
HARDWARE_EVENTS = {
    "cpu-cycles": 0,
    "cycles": 0,
    "instructions": 1,
    "cache-references": 2,
    "cache-misses": 3,
    "branch-instructions": 4,
    "branches": 4,
    "branch-misses": 5,
    "bus-cycles": 6,
    "stalled-cycles-frontend": 7,
    "stalled-cycles-backend": 8,
    "ref-cycles": 9,
}

# kind -> the fields after the kind, in order; a probe has exactly these.
GRAMMAR: dict[str, tuple[str, ...]] = {
    "tracepoint": ("category", "event"),
    "raw_tracepoint": ("event",),
    "kprobe": ("function",),
    "kretprobe": ("function",),
    "uprobe": ("path", "symbol"),
    "uretprobe": ("path", "symbol"),
    "usdt": ("path", "provider", "probe"),
    "profile": ("unit", "rate"),
    "software": ("event", "period"),
    "hardware": ("event", "period"),
}
STATIC_KINDS = frozenset({"tracepoint", "raw_tracepoint", "usdt"})


@dataclass(frozen=True)
class Probe:
    kind: str
    fields: tuple[str, ...]

    def __str__(self) -> str:
        return ":".join((self.kind, *self.fields))

    def field(self, name: str) -> str:
        return self.fields[GRAMMAR[self.kind].index(name)]

    @property
    def is_static(self) -> bool:
        return self.kind in STATIC_KINDS


def parse_probe(text: str) -> Probe:
    """Parse one probe; raise ValueError with a message fit for the operator."""
    kind, _, rest = text.strip().partition(":")
    if kind not in GRAMMAR:
        raise ValueError(f"unknown probe type {kind!r} in {text!r}; known: {', '.join(GRAMMAR)}")
    names = GRAMMAR[kind]
    # Paths may not contain ':', so uprobe/usdt split from the right after the path.
    fields = tuple(_split(rest, len(names), from_right=kind in ("uprobe", "uretprobe", "usdt")))
    if len(fields) != len(names) or not all(fields):
        raise ValueError(f"{text!r}: expected {kind}:{':'.join(n.upper() for n in names)}")
    probe = Probe(kind, fields)
    _check_values(probe, text)
    return probe


def _split(rest: str, count: int, from_right: bool) -> list[str]:
    if from_right:
        return rest.rsplit(":", count - 1)
    return rest.split(":")  # a ':' in the last field is one field too many, not part of it


def _check_values(probe: Probe, text: str) -> None:
    if probe.kind == "profile":
        if probe.field("unit") != "hz" or not _positive(probe.field("rate")):
            raise ValueError(f"{text!r}: expected profile:hz:RATE, e.g. profile:hz:49")
    elif probe.kind in ("software", "hardware"):
        events = SOFTWARE_EVENTS if probe.kind == "software" else HARDWARE_EVENTS
        if probe.field("event") not in events:
            raise ValueError(
                f"{text!r}: unknown {probe.kind} event {probe.field('event')!r}; "
                f"known: {', '.join(events)}"
            )
        if not _positive(probe.field("period")):
            raise ValueError(f"{text!r}: PERIOD must be a positive integer")
    elif probe.kind in ("uprobe", "uretprobe", "usdt") and not probe.field("path").startswith("/"):
        raise ValueError(f"{text!r}: the binary must be an absolute path")


def _positive(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) > 0
