"""Loader stage, daemon side: run compile workers in parallel and keep the fds they hand over.

Importing this module never imports bcc; only `python -m exporter.loader` (the worker) does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import kallsyms
from ..config import ProgramSpec
from ..errors import LoadError
from . import handoff
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

    def run(self, job: dict[str, Any], label: str) -> tuple[dict[str, Any], list[int], str]:
        """Run one job; return the worker's message, its fds and its stderr."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A file, not a pipe: a verifier log can outgrow a pipe buffer and stall the worker.
        with parent, tempfile.TemporaryFile() as stderr:
            with child:
                proc = subprocess.Popen(
                    [self.python, "-m", "exporter.loader", str(child.fileno())],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    pass_fds=[child.fileno()],
                    env=_worker_env(),
                )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
            parent.settimeout(self.timeout)
            try:
                meta, fds = handoff.receive(parent)
            except TimeoutError:
                proc.kill()
                proc.wait()
                raise LoadError(
                    label, f"compile worker timed out after {self.timeout:g} s"
                ) from None
            finally:
                _reap(proc)
            stderr.seek(0)
            return meta, fds, stderr.read().decode(errors="replace")


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # The worker must find this package even when the daemon was started from elsewhere.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load(spec: ProgramSpec, worker: Worker) -> LoadedProgram:
    job = {
        "code": with_prelude(spec.code),
        "cflags": [*spec.program.cflags, *kaddr_cflags(spec)],
        "probes": [p.model_dump(mode="json") for p in spec.program.probes],
        "perf_maps": sorted({c.perf_map for c in spec.program.metrics.counters if c.perf_map}),
    }
    meta, fds, stderr = worker.run(job, spec.name)
    if not meta:
        raise LoadError(spec.name, f"compile worker died: {_tail(stderr)}")
    if not meta["ok"]:
        raise LoadError(spec.name, _failure(meta, stderr), meta["stage"] == "unavailable")
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
    """Compile every program in parallel; each result is a program or the error that stopped it."""

    def one(spec: ProgramSpec) -> LoadedProgram | LoadError:
        log.info('program "%s": compiling', spec.name)
        started = time.monotonic()
        try:
            loaded = load(spec, worker)
        except LoadError as err:
            if err.unavailable:
                log.warning('program "%s": skipped: %s', spec.name, err.reason)
            else:
                log.error("%s", err)
            return err
        _log_attachments(loaded)
        log.info(
            'program "%s": ready in %.2f s (compile %.2f s, attach %.3f s)',
            spec.name,
            time.monotonic() - started,
            loaded.compile_seconds,
            loaded.attach_seconds,
        )
        return loaded

    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        return list(pool.map(one, specs))


def _log_attachments(loaded: LoadedProgram) -> None:
    by_function: dict[str, list[Attachment]] = {}
    for a in loaded.attachments:
        by_function.setdefault(a.function, []).append(a)
    for function, attached in by_function.items():
        for probe, why in attached[0].tried:
            log.info('program "%s": %s: skipped %s: %s', loaded.name, function, probe, why)
        probes = ", ".join(a.probe for a in attached)
        log.info('program "%s": %s attached via %s', loaded.name, function, probes)
