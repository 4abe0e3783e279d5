"""A `bpftrace:` program of a config file -> the native program it runs as.

Translated when the config is validated (in the config worker), so that what reaches the
spawner, the compile workers, reloads and the collectors is an ordinary program: C code and a
`metrics:` block. A `source:` file ending in `.bt` is a bpftrace script too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..config.models import NAME, Strict
from .codegen import Generator
from .diagnostics import Origin, ScriptError, render
from .metrics import UNITS, Listed, MetricsError, native_metrics
from .parser import parse
from .tracefs import Tracepoints

SUFFIX = ".bt"


class BpftraceMetric(Strict):
    map: str = Field(
        pattern=r"^@[A-Za-z_0-9]*$", description='the map as the script names it: "@failed"'
    )
    help: str | None = Field(None, min_length=1)
    unit: Literal[tuple(UNITS)] | None = None  # type: ignore[valid-type]
    labels: dict[str, str] = Field({}, description="renames: {key0: filename}")

    @model_validator(mode="after")
    def _label_names(self) -> BpftraceMetric:
        import re

        for new in self.labels.values():
            if not re.fullmatch(NAME, new):
                raise ValueError(f"labels: {new!r} is not a label name")
        return self


class BpftraceProgram(Strict):
    name: str = Field(pattern=NAME)
    namespace: str = Field("bcc", pattern=NAME)
    bpftrace: str | None = None
    source: str | None = None
    default: bool = True
    metrics: list[BpftraceMetric] = []

    @model_validator(mode="after")
    def _one_script(self) -> BpftraceProgram:
        if (self.bpftrace is None) == (self.source is None):
            raise ValueError("give exactly one of bpftrace (inline) or source (a .bt file)")
        maps = [m.map for m in self.metrics]
        dupes = sorted({m for m in maps if maps.count(m) > 1})
        if dupes:
            raise ValueError(f"metrics: {', '.join(dupes)} listed more than once")
        return self


class Diagnostic(ValueError):
    """A script error as bpftrace prints one: where, the line, a caret (the whole story)."""


def is_bpftrace(raw: Any) -> bool:
    """Whether a program entry of a config file is a bpftrace one."""
    if not isinstance(raw, dict):
        return False
    source = raw.get("source")
    return "bpftrace" in raw or (isinstance(source, str) and source.endswith(SUFFIX))


def clashes(raw: dict[str, Any]) -> str | None:
    """Why the entry mixes bpftrace with C code, if it does."""
    if sum(key in raw for key in ("code", "source", "bpftrace")) > 1:
        return "give exactly one of code (inline C), source (a file) or bpftrace"
    return None


def to_native(
    program: BpftraceProgram,
    script: str,
    origin: Origin,
    tracepoints: Tracepoints | None = None,
) -> dict[str, Any]:
    """The native program entry; ValueError with a bpftrace-style diagnostic, or naming the
    `metrics:` field, when the script cannot run here."""
    try:
        done = Generator(tracepoints or Tracepoints()).translate(parse(script))
    except ScriptError as err:
        raise Diagnostic(render(err, script, origin, f'program "{program.name}"')) from None
    listed = {m.map: Listed(m.help, m.unit, dict(m.labels)) for m in program.metrics}
    try:
        metrics = native_metrics(program.name, done, listed)
    except MetricsError as err:
        raise ValueError(f"metrics: {err}") from None
    return {
        "name": program.name,
        "namespace": program.namespace,
        "default": program.default,
        "code": done.code,
        "probes": [{"function": f, "attach": probe} for f, probe in done.bindings],
        "metrics": metrics,
    }


def script_of(
    program: BpftraceProgram, config: Path, read: Callable[[Path], str]
) -> tuple[str, Path | None]:
    """The script's text, and its file when it has one of its own (a .bt source)."""
    if program.bpftrace is not None:
        return program.bpftrace, None
    assert program.source is not None
    path = config.parent / program.source
    return read(path), path
