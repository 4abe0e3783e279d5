"""`bcc_exporter list`: every program, its probes, and what this kernel would attach."""

from __future__ import annotations

from .compiler.availability import ProbeUnavailable, auto_attached, check
from .config import ProgramSpec
from .probes import parse_probe
from .terminal import printable


def describe(specs: list[ProgramSpec]) -> str:
    """Every line printable: probe names and reasons come from tracefs, binaries and errors."""
    lines = "\n".join(_program(spec) for spec in specs).split("\n")
    return "\n".join(printable(line) for line in lines) + "\n"


def _program(spec: ProgramSpec) -> str:
    bindings = [(f"{p.function}", [str(a) for a in p.attach]) for p in spec.program.probes]
    bindings += [("(in the code)", [probe]) for probe in auto_attached(spec.code)]
    lines, available = [], True
    for function, alternatives in bindings:
        chosen, reasons = _first_available(alternatives)
        if chosen is None:
            available = False
            lines.append(f"  {function}: unavailable ({'; '.join(reasons)})")
        else:
            passed_over = f" (not {'; '.join(reasons)})" if reasons else ""
            lines.append(f"  {function}: {chosen}{passed_over}")
    state = "available" if available else "unavailable"
    default = "" if spec.program.default else ", off by default"
    return f"{spec.name}: {state}{default}\n" + "\n".join(lines)


def _first_available(alternatives: list[str]) -> tuple[str | None, list[str]]:
    reasons = []
    for text in alternatives:
        try:
            check(parse_probe(text))
        except ProbeUnavailable as err:
            reasons.append(f"{text}: {err}")
            continue
        return text, reasons
    return None, reasons
