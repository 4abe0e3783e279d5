"""What the supervisor says of each configured program, for whoever shows it (the landing
page, the self metrics, /-/ready): published by the supervisor at every start and reload,
read-only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .errors import LoadError
from .loader import LoadedProgram


@dataclass(frozen=True)
class ProgramStatus:
    program: str
    state: Literal["attached", "failed", "skipped"]  # skipped: the kernel lacks its probes
    probes: tuple[tuple[str, str], ...] = ()  # (function, probe) attached
    error: str = ""
    compile_seconds: float = 0.0


def statuses(
    loaded: Iterable[LoadedProgram], failed: Iterable[LoadError]
) -> tuple[ProgramStatus, ...]:
    running = [
        ProgramStatus(
            p.name,
            "attached",
            tuple(sorted({(a.function, a.probe) for a in p.attachments})),
            compile_seconds=p.compile_seconds,
        )
        for p in loaded
    ]
    stopped = [
        ProgramStatus(e.program, "skipped" if e.unavailable else "failed", error=e.reason)
        for e in failed
    ]
    return (*running, *stopped)


def unready(started: bool, status: Iterable[ProgramStatus]) -> list[str]:
    """Why the exporter is not ready (/-/ready), or nothing: start-up has finished, and every
    configured program that can run on this kernel is attached. A program skipped because the
    kernel lacks its probes does not count against it; one that failed to compile or attach
    does."""
    if not started:
        return ["starting"]
    return [f"{s.program}: {s.error}" for s in status if s.state == "failed"]
