"""Loader stage, server side: ask the privileged spawner for the programs of the config on
disk, and keep the fds it hands over as LoadedPrograms.

The spawner reads and validates the config, and compiles in throwaway workers (`python -I -m
exporter.compiler`, the only code that imports bcc); this module never imports bcc.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..config import ProgramSpec
from ..errors import ConfigError, LoadError
from ..privsep.client import Replies, Spawner
from ..targets import Target
from ..tracefs import remember_events
from ..workers import wire
from ..workers.messages import Compiling, Done, Failed, Loaded, Refused, Reload, Selection

log = logging.getLogger(__name__)

COMPILER_LINE = re.compile(r"^\S+:\d+:\d+: (error|fatal error): ")
CLOSE_THREADS = 32
# What bcc says when the verifier refuses a function (it prints the verifier log to stderr).
VERIFIER_REJECTED = "Failed to load BPF program"
# Failures the default config expects on some kernels: skipped programs, not errors. "no-btf":
# the program reads struct fields through BTF (exporter.btf) and the kernel has none.
UNAVAILABLE_STAGES = ("unavailable", "no-btf")


@dataclass(frozen=True)
class Attachment:
    function: str
    probe: str
    tried: tuple[tuple[str, str], ...] = ()  # (probe, why not) for alternatives passed over
    target: Target | None = None  # the file of a uprobe or USDT probe


@dataclass(frozen=True)
class PerfRing:
    """One CPU's bpf-output perf event of a BPF_PERF_OUTPUT map."""

    map: str
    cpu: int
    fd: int


@dataclass
class LoadedProgram:
    spec: ProgramSpec
    maps: dict[str, int]
    key_descs: dict[str, str]
    functions: dict[str, int]
    attachments: list[Attachment]
    fds: list[int]
    compile_seconds: float
    attach_seconds: float
    headers: str
    perf_rings: list[PerfRing] = field(default_factory=list)
    counted_maps: list[str] = field(default_factory=list)  # see metrics.self_metrics
    closed: bool = field(default=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def close(self) -> None:
        """Closing the last fd of a perf event or link detaches it; of a map, frees it."""
        if self.closed:
            return
        self.closed = True
        # Each tracepoint detach waits out an RCU grace period (~70 ms here); closing from
        # several threads lets those waits overlap (measured: 722 fds in 26 s -> 14 s).
        with ThreadPoolExecutor(max_workers=CLOSE_THREADS) as pool:
            pool.map(_close, self.fds)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


@dataclass
class Outcome:
    """What a reload found on disk, and what became of the programs it compiled."""

    specs: list[ProgramSpec]  # every program of the config, compiled now or not
    loaded: list[LoadedProgram]
    failed: list[LoadError]


def load(
    spawner: Spawner,
    have: frozenset[str] = frozenset(),
    asked: Replies | None = None,
    selected: Callable[[list[ProgramSpec]], None] | None = None,
) -> Outcome:
    """The config on disk, and its programs whose digest is not in `have`, compiled;
    ConfigError when the config cannot be used (then nothing was compiled). `asked`: the
    replies to a Reload(have) sent before (a start sends it before the server's imports);
    `selected`: told the config's programs as soon as the spawner names them, before they
    compile."""
    outcome = Outcome([], [], [])
    by_name: dict[str, ProgramSpec] = {}
    started: dict[str, float] = {}
    described = done = False
    without_btf: list[str] = []
    for reply, fds in asked or spawner.ask(Reload(have)):
        if isinstance(reply, Refused):
            if not described:
                raise ConfigError(reply.error)
            log.error("%s", reply.error)
            break
        if isinstance(reply, Selection):
            outcome.specs = [ProgramSpec.described(d) for d in reply.programs]
            by_name = {s.name: s for s in outcome.specs}
            described = True
            if selected is not None:
                selected(outcome.specs)
        elif isinstance(reply, Compiling):
            started[reply.program] = time.monotonic()
            log.info('program "%s": compiling', reply.program)
        elif isinstance(reply, Loaded):
            program = loaded(by_name[reply.program], reply, fds)
            _log_attachments(program)
            log.info(
                'program "%s": ready in %.2f s (compile %.2f s, attach %.3f s)',
                program.name,
                time.monotonic() - started.get(program.name, time.monotonic()),
                program.compile_seconds,
                program.attach_seconds,
            )
            outcome.loaded.append(program)
        elif isinstance(reply, Failed):
            wire.close(fds)
            error = LoadError(reply.program, _failure(reply), reply.stage in UNAVAILABLE_STAGES)
            if reply.stage == "no-btf":
                without_btf.append(reply.program)  # all named in one line below
            elif error.unavailable:
                log.warning('program "%s": skipped: %s', reply.program, error.reason)
            else:
                log.error("%s", error)
            outcome.failed.append(error)
        elif isinstance(reply, Done):
            done = True
        else:
            wire.close(fds)
    if without_btf:
        log.warning(
            "the kernel has no BTF (/sys/kernel/btf/vmlinux): not running %s, which read kernel"
            " struct fields through it (BTF_READ); the other programs run",
            ", ".join(sorted(without_btf)),
        )
    if not described:
        # Not even the selection: nothing is known of the config, so nothing may change.
        raise ConfigError("the privileged spawner gave no answer (its log says why)")
    if not done:
        answered = {p.name for p in outcome.loaded} | {e.program for e in outcome.failed}
        for spec in outcome.specs:
            if spec.digest not in have and spec.name not in answered:
                outcome.failed.append(LoadError(spec.name, "no answer from the spawner"))
    return outcome


def loaded(spec: ProgramSpec, reply: Loaded, fds: list[int]) -> LoadedProgram:
    meta = reply.meta
    remember_events(meta["tracepoint_ids"])
    return LoadedProgram(
        spec=spec,
        maps={m["name"]: fds[m["fd"]] for m in meta["maps"]},
        key_descs={m["name"]: m["key_desc"] for m in meta["maps"]},
        functions={f["name"]: fds[f["fd"]] for f in meta["functions"]},
        attachments=[
            Attachment(
                a["function"],
                a["probe"],
                tuple((t["probe"], t["error"]) for t in a["tried"]),
                Target(**a["target"]) if "target" in a else None,
            )
            for a in meta["attachments"]
        ],
        fds=fds,
        compile_seconds=meta["compile_seconds"],
        attach_seconds=meta["attach_seconds"],
        headers=meta["headers"],
        perf_rings=[PerfRing(r["map"], r["cpu"], fds[r["fd"]]) for r in meta["perf_rings"]],
        counted_maps=meta["counted_maps"],
    )


def _failure(failed: Failed) -> str:
    if failed.stage == "worker":
        said = _tail(failed.stderr) if failed.stderr.strip() else None
        return f"{failed.error}: {said}" if said else failed.error
    if failed.stage != "compile":
        if VERIFIER_REJECTED in failed.error:
            return f"{failed.error}; verifier: {_tail(failed.stderr)}"
        return failed.error
    compiler = [line for line in failed.stderr.splitlines() if COMPILER_LINE.match(line)]
    if compiler:
        return "compile failed: " + " | ".join(compiler[:5])
    # Not a compiler diagnostic: the verifier's log, whose last lines say why.
    return f"{failed.error}: {_tail(failed.stderr)}"


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "no output"


def _log_attachments(loaded: LoadedProgram) -> None:
    by_function: dict[str, list[Attachment]] = {}
    for a in loaded.attachments:
        by_function.setdefault(a.function, []).append(a)
    for function, attached in by_function.items():
        for probe, why in attached[0].tried:
            log.info('program "%s": %s: skipped %s: %s', loaded.name, function, probe, why)
        probes = ", ".join(a.probe for a in attached)
        log.info('program "%s": %s attached via %s', loaded.name, function, probes)
