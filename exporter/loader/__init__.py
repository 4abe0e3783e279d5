"""Loader stage, daemon side: run compile workers in parallel, each compiling several programs
one after another, and keep the fds they hand over.

Importing this module never imports bcc; only `python -m exporter.loader` (the worker) does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import kallsyms, privsep
from ..config import ProgramSpec
from ..errors import LoadError
from .prelude import with_prelude
from .targets import Target

log = logging.getLogger(__name__)

COMPILER_LINE = re.compile(r"^\S+:\d+:\d+: (error|fatal error): ")
CLOSE_THREADS = 32
# What bcc says when the verifier refuses a function (it prints the verifier log to stderr).
VERIFIER_REJECTED = "Failed to load BPF program"


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


@dataclass(frozen=True)
class Worker:
    """How to start a compile worker: an interpreter that can import Debian's bcc."""

    python: str = sys.executable
    timeout: float = 120.0

    def run(self, jobs: list[dict[str, Any]]) -> Iterator[privsep.Reply]:
        """Run jobs one after another in one worker; yield its replies to a prefix of them, at
        least one (the privsep module's doc says what they are). An `{"error": ...}` reply
        is the last and belongs to the job after the last one answered; the caller runs the
        jobs after that one again, in a fresh worker."""
        return privsep.run_worker(jobs, self.python, self.timeout)


@dataclass
class Answer:
    """A worker's answer to one job."""

    meta: dict[str, Any]  # the worker's message; {} when `error` says why there is none
    fds: list[int]
    stderr: str  # what the worker printed while on this job
    seconds: float  # from starting this job to the answer
    error: str | None = None  # the worker could not answer: it died, hung or was refused


def answers(
    worker: Worker, jobs: list[dict[str, Any]], starting: Callable[[int], None]
) -> Iterator[Answer]:
    """Answers to a prefix of the jobs (at least one), calling `starting(i)` as the worker
    starts job i."""
    stderr, started = -1, time.monotonic()
    try:
        for message, fds in worker.run(jobs):
            if "error" in message:
                _close_all(fds)
                said = _read(stderr)
                yield Answer({}, [], said, time.monotonic() - started, message["error"])
                return
            meta = message["meta"]
            if "compiling" in meta:
                _close_all([stderr])
                stderr, started = fds[0], time.monotonic()
                starting(meta["compiling"])
                continue
            yield Answer(meta, fds, _read(stderr), time.monotonic() - started)
    finally:
        _close_all([stderr])


def _read(fd: int) -> str:
    if fd < 0:
        return ""
    os.lseek(fd, 0, os.SEEK_SET)
    with os.fdopen(os.dup(fd), "rb") as file:
        return file.read().decode(errors="replace")


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        if fd >= 0:
            _close(fd)


def run_one(worker: Worker, job: dict[str, Any], label: str) -> tuple[dict[str, Any], str]:
    """One job in its own worker: its message and stderr; LoadError if it gave none."""
    answer = next(answers(worker, [job], lambda _: None))
    _close_all(answer.fds)
    if answer.error is not None:
        raise LoadError(label, _unanswered(answer))
    return answer.meta, answer.stderr


def _unanswered(answer: Answer) -> str:
    """Why the worker gave no answer, with its last words on this job if it had any."""
    said = _tail(answer.stderr) if answer.stderr.strip() else None
    return f"{answer.error}: {said}" if said else str(answer.error)


def compile_job(spec: ProgramSpec) -> dict[str, Any]:
    return {
        "code": with_prelude(spec.code),
        "cflags": [*spec.program.cflags, *kaddr_cflags(spec)],
        "probes": [p.model_dump(mode="json") for p in spec.program.probes],
        "perf_maps": sorted({c.perf_map for c in spec.program.metrics.counters if c.perf_map}),
    }


def loaded(spec: ProgramSpec, answer: Answer) -> LoadedProgram:
    """The program a worker's answer describes; LoadError if the worker failed it."""
    meta, fds = answer.meta, answer.fds
    if answer.error is not None:
        raise LoadError(spec.name, _unanswered(answer))
    if not meta["ok"]:
        raise LoadError(spec.name, _failure(meta, answer.stderr), meta["stage"] == "unavailable")
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
    )


def kaddr_cflags(spec: ProgramSpec, path: Path = kallsyms.KALLSYMS) -> list[str]:
    """`-Dkaddr_<symbol>=<address>` for each of the program's kaddrs, as ebpf_exporter v1 did."""
    wanted = spec.program.kaddrs
    if not wanted:
        return []
    found = kallsyms.addresses(wanted, path)
    missing = [name for name in wanted if name not in found]
    if missing:
        raise LoadError(spec.name, f"kaddrs: not in {path}: {', '.join(missing)}")
    if not any(found.values()):
        raise LoadError(spec.name, f"kaddrs: {path} shows every address as 0 (needs CAP_SYSLOG)")
    return [f"-Dkaddr_{name}=0x{found[name]:x}ULL" for name in wanted]


def _failure(meta: dict[str, Any], stderr: str) -> str:
    if meta.get("stage") != "compile":
        if VERIFIER_REJECTED in meta["error"]:
            return f"{meta['error']}; verifier: {_tail(stderr)}"
        return meta["error"]
    compiler = [line for line in stderr.splitlines() if COMPILER_LINE.match(line)]
    if compiler:
        return "compile failed: " + " | ".join(compiler[:5])
    # Not a compiler diagnostic: the verifier's log, whose last lines say why.
    return f"{meta['error']}: {_tail(stderr)}"


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "no output"


def load_all(
    specs: Sequence[ProgramSpec], worker: Worker, jobs: int | None = None
) -> list[LoadedProgram | LoadError]:
    """Compile every program, in `jobs` workers at once (default: one per CPU), each compiling
    its share one after another; each result is a program or the error that stopped it."""
    results: dict[int, LoadedProgram | LoadError] = {}
    ready: list[tuple[int, dict[str, Any]]] = []
    for index, spec in enumerate(specs):
        try:
            ready.append((index, compile_job(spec)))
        except LoadError as err:
            log.error("%s", err)
            results[index] = err
    shares = plan([cost(job) for _, job in ready], jobs or os.cpu_count() or 1)

    def run_share(share: list[int]) -> None:
        batch = [ready[i] for i in share]
        while batch:  # a worker that died or hung leaves the rest to a fresh one
            done = _run_batch([specs[i] for i, _ in batch], [job for _, job in batch], worker)
            results.update(zip([i for i, _ in batch], done, strict=False))
            batch = batch[len(done) :]

    with ThreadPoolExecutor(max_workers=max(len(shares), 1)) as pool:
        list(pool.map(run_share, shares))
    return [results[i] for i in range(len(specs))]


# A guess at a program's compile time, in bytes of plain source: it grows by ~17 ms per KB
# from ~0.1 s (what any program costs, as much as 6 KB of source), and much more with each
# kernel header it includes: profile's uapi/linux/bpf_perf_event.h pulls in linux/sched.h,
# 0.7 s of its 0.85 s. Architecture headers (asm/unistd.h) are small and not counted.
JOB_COST = 6_000
INCLUDE_COST = 40_000
_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include[ \t]*[<\"](?!asm/)", re.MULTILINE)


def cost(job: dict[str, Any]) -> int:
    code = job["code"]
    return JOB_COST + len(code) + INCLUDE_COST * len(_INCLUDE.findall(code))


def plan(costs: Sequence[int], workers: int) -> list[list[int]]:
    """Share jobs among workers: longest first, each to the worker with the least work so far
    (LPT scheduling, within 4/3 of the best split); each share in the order it is compiled."""
    shares: list[list[int]] = [[] for _ in range(min(workers, len(costs)))]
    loads = [0] * len(shares)
    for index in sorted(range(len(costs)), key=lambda i: -costs[i]):
        least = loads.index(min(loads))
        shares[least].append(index)
        loads[least] += costs[index]
    return shares


def _run_batch(
    specs: list[ProgramSpec], jobs: list[dict[str, Any]], worker: Worker
) -> list[LoadedProgram | LoadError]:
    """Results for a prefix of the programs, at least one, from one worker."""
    done: list[LoadedProgram | LoadError] = []

    def starting(index: int) -> None:
        log.info('program "%s": compiling', specs[index].name)

    for answer in answers(worker, jobs, starting):
        spec = specs[len(done)]
        try:
            program = loaded(spec, answer)
        except LoadError as err:
            if err.unavailable:
                log.warning('program "%s": skipped: %s', spec.name, err.reason)
            else:
                log.error("%s", err)
            done.append(err)
            continue
        _log_attachments(program)
        log.info(
            'program "%s": ready in %.2f s (compile %.2f s, attach %.3f s)',
            spec.name,
            answer.seconds,
            program.compile_seconds,
            program.attach_seconds,
        )
        done.append(program)
    return done


def _log_attachments(loaded: LoadedProgram) -> None:
    by_function: dict[str, list[Attachment]] = {}
    for a in loaded.attachments:
        by_function.setdefault(a.function, []).append(a)
    for function, attached in by_function.items():
        for probe, why in attached[0].tried:
            log.info('program "%s": %s: skipped %s: %s', loaded.name, function, probe, why)
        probes = ", ".join(a.probe for a in attached)
        log.info('program "%s": %s attached via %s', loaded.name, function, probes)
