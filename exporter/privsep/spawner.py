"""The privileged spawner: `python -I -m exporter.privsep FD PARENT_PID [options]`.

The only process of the daemon that keeps capabilities once it serves. The command that
started it fixed what it may compile (the selection settings: config flags, snapshot's
program); the server may ask it, over the SEQPACKET socket FD, for two things only (see
exporter.workers.messages.Request): reload, and a header check. For a reload it reads the
config files itself (selection.py), and compiles the programs whose digest the server does not
already have, in compile workers that each take a share (longest first), relaying what they
hand over: fds and typed descriptions. It dies with the server (PR_SET_PDEATHSIG and EOF on
its socket), killing the workers still running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from .. import capabilities
from ..workers import runner, wire
from ..workers.messages import (
    CheckHeaders,
    CompileJob,
    Compiling,
    Done,
    Failed,
    HeaderJob,
    Headers,
    Job,
    Loaded,
    LoadedMeta,
    MessageError,
    Refused,
    Reply,
    Request,
    Selection,
    decode_request,
    encode_reply,
)
from ..workers.plan import cost, plan
from . import selection

log = logging.getLogger(__name__)

READY = b"ready"
COMPILE_WORKER = "exporter.loader"
MAX_PARALLEL = 8  # requests served at once (a reload and a header check)
STDERR_TAIL = 64 << 10  # what a job printed that the server is told


@dataclass(frozen=True)
class Options:
    python: str  # the interpreter of the compile workers (it must import bcc)
    timeout: float  # seconds one job may take
    jobs: int  # compile workers at once
    compile: bool  # False for `list`: selections only
    settings: selection.Settings

    def to_args(self) -> list[str]:
        args = ["--python", self.python, "--timeout", repr(self.timeout), "--jobs", str(self.jobs)]
        return args + ([] if self.compile else ["--no-compile"]) + self.settings.to_args()


def parse_options(argv: list[str]) -> tuple[int, int, Options]:
    p = argparse.ArgumentParser(prog="exporter.privsep")
    p.add_argument("fd", type=int)
    p.add_argument("parent", type=int)
    p.add_argument("--python", required=True)
    p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--jobs", type=int, required=True)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--builtin-dir", required=True)
    p.add_argument("--config-dir")
    p.add_argument("--name", dest="names", action="append", default=[])
    p.add_argument("--file", dest="files", action="append", default=[])
    p.add_argument("--every-builtin", action="store_true")
    p.add_argument("--only")
    p.add_argument("--insecure", action="store_true")
    a = p.parse_args(argv)
    settings = selection.Settings(
        builtin_dir=a.builtin_dir,
        config_dir=a.config_dir,
        names=tuple(a.names),
        files=tuple(a.files),
        every_builtin=a.every_builtin,
        only=a.only,
        insecure=a.insecure,
    )
    return a.fd, a.parent, Options(a.python, a.timeout, max(1, a.jobs), a.compile, settings)


def main(argv: list[str]) -> int:
    fd, parent, options = parse_options(argv)
    capabilities.die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:  # the server died before the line above
        return 1
    # Signals to the process group or cgroup (Ctrl-C, systemctl stop) are for the server,
    # which stops the spawner by closing its socket once its programs are detached.
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    logging.addLevelName(logging.WARNING, "WARN")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-5s spawner: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    sock = socket.socket(fileno=fd)
    sock.send(READY)
    serve(sock, options)
    # Their programs would only be closed again: the server that wanted them is gone.
    for process in list(_RUNNING):
        with contextlib.suppress(OSError):
            process.kill()
    return 0


def serve(sock: socket.socket, options: Options) -> None:
    """Answer requests until the server closes its end."""
    slots = threading.BoundedSemaphore(MAX_PARALLEL)
    while True:
        try:
            data, fds, flags, _ = socket.recv_fds(sock, 4096, 1)
        except OSError as err:
            log.error("cannot read requests: %s", err)
            return
        if not data and not fds:
            return  # EOF: the server is gone
        try:
            reply = _reply_socket(fds, flags)
        except MessageError as err:
            wire.close(fds)
            log.warning("refused a request: %s", err)
            continue
        try:
            request = decode_request(data)
        except MessageError as err:
            log.warning("refused a request: %s", err)
            with reply:
                _answer(reply, Refused(f"the privileged spawner refused the request: {err}"))
            continue
        slots.acquire()
        threading.Thread(target=_serve_one, args=(reply, request, options, slots)).start()


def _reply_socket(fds: list[int], flags: int) -> socket.socket:
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        raise MessageError("message or fds truncated")
    if len(fds) != 1:
        raise MessageError(f"a request carries exactly one fd, not {len(fds)}")
    if not stat.S_ISSOCK(os.fstat(fds[0]).st_mode):
        raise MessageError("the request's fd is not a socket")
    reply = socket.socket(fileno=fds[0])
    if reply.family != socket.AF_UNIX or reply.type != socket.SOCK_SEQPACKET:
        reply.detach()
        raise MessageError("the request's fd is not a Unix SEQPACKET socket")
    return reply


def _serve_one(
    reply: socket.socket, request: Request, options: Options, slots: threading.BoundedSemaphore
) -> None:
    try:
        with reply:
            if isinstance(request, CheckHeaders):
                _check_headers(reply, options)
            else:
                _reload(reply, request.have, options)
    finally:
        slots.release()


def _answer(reply: socket.socket, message: Reply, fds: list[int] | None = None) -> bool:
    try:
        wire.send(reply, encode_reply(message), fds or [])
        return True
    except OSError as err:  # the server gave up waiting, or died
        log.warning("cannot answer the server: %s", err)
        return False


def _reload(reply: socket.socket, have: frozenset[str], options: Options) -> None:
    try:
        programs = selection.read(options.settings, options.python)
    except selection.SelectionError as err:
        _answer(reply, Refused(str(err)))
        return
    todo = [job for d, job in programs if options.compile and d.digest not in have]
    described = Selection(tuple(d for d, _ in programs), tuple(j.program for j in todo))
    if _answer(reply, described):
        _compile(todo, options, reply)
        _answer(reply, Done())


def _compile(jobs: list[CompileJob], options: Options, reply: socket.socket) -> None:
    """Every job, in `options.jobs` workers at once, each compiling its share in turn; every
    answer relayed as it comes (a program's fds are closed here once the server has them: a
    copy kept would keep it attached after the server closed its own)."""
    lock = threading.Lock()
    gone = threading.Event()

    def relay(message: Reply, fds: list[int]) -> None:
        with lock:
            try:
                if not gone.is_set() and not _answer(reply, message, fds):
                    gone.set()  # nobody takes the programs: stop compiling them
            finally:
                wire.close(fds)

    def run_share(share: list[int]) -> None:
        batch: list[Job] = [jobs[i] for i in share]
        while batch and not gone.is_set():  # a worker that died leaves the rest to a fresh one
            answered = 0
            for message, fds in run_worker(batch, options.python, options.timeout, gone.is_set):
                relay(message, fds)
                answered += not isinstance(message, Compiling)
            batch = batch[max(answered, 1) :]

    shares = plan([cost(job) for job in jobs], options.jobs)
    threads = [threading.Thread(target=run_share, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _check_headers(reply: socket.socket, options: Options) -> None:
    for message, fds in run_worker([HeaderJob()], options.python, options.timeout, lambda: False):
        wire.close(fds)
        if isinstance(message, Headers):
            _answer(reply, message)
            return
        if isinstance(message, Failed):
            _answer(reply, Headers(None, message.error))
            return


# Workers running now, killed when the server goes.
_RUNNING: set[subprocess.Popen[bytes]] = set()


def run_worker(
    jobs: list[Job], python: str, timeout: float, cancelled: Callable[[], bool]
) -> Iterator[tuple[Reply, list[int]]]:
    """One compile worker on a batch of jobs: for each job it answers, Compiling and then its
    Loaded/Failed/Headers; if it dies or takes over `timeout` on a job, Failed for that job
    (stage "worker") and nothing after: the caller runs the rest in a fresh worker."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with parent, tempfile.TemporaryFile() as early_stderr:
        with child:
            try:
                process = runner.start(
                    python,
                    COMPILE_WORKER,
                    [str(child.fileno())],
                    pass_fds=[child.fileno()],
                    stdin=subprocess.PIPE,
                    stderr=early_stderr,
                )
            except OSError as err:
                yield _failed(jobs[0], f"cannot run the compile worker: {err}", ""), []
                return
        _RUNNING.add(process)
        stderr: IO[bytes] | None = None
        answered = 0
        try:
            _write_jobs(process, jobs)
            parent.settimeout(timeout)
            while answered < len(jobs) and not cancelled():
                try:
                    message, fds = wire.receive(parent)
                except TimeoutError:
                    process.kill()
                    said = _tail(stderr)
                    why = f"compile worker timed out after {timeout:g} s"
                    yield _failed(jobs[answered], why, said), []
                    return
                if not message:
                    said = _tail(stderr) if stderr else _tail(early_stderr)
                    yield _failed(jobs[answered], _died(process), said), []
                    return
                if "compiling" in message:
                    if stderr is not None:
                        stderr.close()
                    stderr = os.fdopen(fds[0], "rb")
                    yield Compiling(_name(jobs[answered])), []
                    continue
                yield _result(jobs[answered], message, _tail(stderr)), fds
                answered += 1
        finally:
            if stderr is not None:
                stderr.close()
            if answered < len(jobs):
                process.kill()
            _reap(process)
            _RUNNING.discard(process)


def _name(job: Job) -> str:
    return job.program if isinstance(job, CompileJob) else "header check"


def _failed(job: Job, error: str, stderr: str) -> Reply:
    if isinstance(job, HeaderJob):
        return Failed("header check", "worker", error, stderr)
    return Failed(job.program, "worker", error, stderr)


def _result(job: Job, message: dict[str, Any], stderr: str) -> Reply:
    if not message.get("ok"):
        return Failed(_name(job), str(message.get("stage")), str(message.get("error")), stderr)
    if isinstance(job, HeaderJob):
        return Headers(message["headers"], "")
    meta: LoadedMeta = {
        "maps": message["maps"],
        "functions": message["functions"],
        "attachments": message["attachments"],
        "perf_rings": message["perf_rings"],
        "compile_seconds": message["compile_seconds"],
        "attach_seconds": message["attach_seconds"],
        "headers": message["headers"],
        "tracepoint_ids": message["tracepoint_ids"],
        "counted_maps": message["counted_maps"],
    }
    return Loaded(job.program, meta, stderr)


def _tail(file: IO[bytes] | None) -> str:
    if file is None:
        return ""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - STDERR_TAIL))
    return file.read().decode(errors="replace")


def _write_jobs(process: subprocess.Popen[bytes], jobs: list[Job]) -> None:
    assert process.stdin is not None
    try:
        process.stdin.write(json.dumps([job.to_json() for job in jobs]).encode())
    except BrokenPipeError:
        pass  # it died at once: its stderr says why
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()


def _died(process: subprocess.Popen[bytes]) -> str:
    _reap(process)
    code = process.returncode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    return f"compile worker died ({how})"


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
