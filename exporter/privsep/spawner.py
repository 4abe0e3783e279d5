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
import logging
import os
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from .. import capabilities
from ..workers import runner, wire
from ..workers.messages import (
    MAX_REQUEST,
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
from ..workers.plan import available_memory, compile_slots, cost, plan, usable_cpus
from . import selection

log = logging.getLogger(__name__)

READY = b"ready"
COMPILE_WORKER = "exporter.compiler"
MAX_PARALLEL = 8  # requests served at once (a reload and a header check)
STDERR_TAIL = 64 << 10  # what a job printed that the server is told


@dataclass(frozen=True)
class Options:
    python: str  # the interpreter of the compile workers (it must import bcc)
    timeout: float  # seconds one job may take
    jobs: int  # compiles at once; 0: from the CPUs and memory available (plan.compile_slots)
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
    return a.fd, a.parent, Options(a.python, a.timeout, max(0, a.jobs), a.compile, settings)


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
    try:
        sock.send(READY)
    except OSError:
        return 0  # the server gave up before we were up (it does not wait for this hello)
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
            data, fds, flags, _ = socket.recv_fds(sock, MAX_REQUEST, 1)
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


# One reload at a time, and not more often than this: each compiles programs as root, and a
# compromised server could otherwise ask for them without end.
_RELOADING = threading.Lock()
MIN_RELOAD_INTERVAL = 1.0
_last_reload = [0.0]


def _serve_one(
    reply: socket.socket, request: Request, options: Options, slots: threading.BoundedSemaphore
) -> None:
    try:
        with reply:
            try:
                if isinstance(request, CheckHeaders):
                    _check_headers(reply, options)
                    return
                with _RELOADING:
                    time.sleep(max(0.0, _last_reload[0] + MIN_RELOAD_INTERVAL - time.monotonic()))
                    try:
                        _reload(reply, request.have, options)
                    finally:
                        _last_reload[0] = time.monotonic()
            except Exception as err:  # noqa: BLE001 - the server hears of it; the spawner goes on
                log.exception("request failed")
                _answer(
                    reply, Refused(f"the privileged spawner failed: {type(err).__name__}: {err}")
                )
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
    # A first load imports bcc (the compile workers' parent) while the config is read.
    zygote = Zygote.start(options.python) if options.compile and not have else None
    try:
        try:
            programs = selection.read(options.settings, options.python)
        except selection.SelectionError as err:
            _answer(reply, Refused(str(err)))
            return
        todo = [job for d, job in programs if options.compile and d.digest not in have]
        described = Selection(tuple(d for d, _ in programs), tuple(j.program for j in todo))
        if not _answer(reply, described):
            return
        if todo:
            zygote = zygote or Zygote.start(options.python)
            _compile(todo, options, zygote, reply)
        _answer(reply, Done())
    finally:
        if zygote is not None:
            zygote.close()


def _compile(
    jobs: list[CompileJob], options: Options, zygote: Zygote, reply: socket.socket
) -> None:
    """Every job, in `options.jobs` compiles at once, each compiling its share in turn; every
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
        while batch and not gone.is_set():  # a compile that died leaves the rest to a fresh one
            answered = 0
            for message, fds in zygote.share(batch, options.timeout, gone.is_set):
                relay(message, fds)
                answered += not isinstance(message, Compiling)
            batch = batch[max(answered, 1) :]

    slots = options.jobs or compile_slots(usable_cpus(), available_memory())
    shares = plan([cost(job) for job in jobs], slots)
    threads = [threading.Thread(target=run_share, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _check_headers(reply: socket.socket, options: Options) -> None:
    # Without bcc: a check cached for these headers needs none (a miss imports it).
    zygote = Zygote.start(options.python, preload=False)
    try:
        for message, fds in zygote.share([HeaderJob()], options.timeout, lambda: False):
            wire.close(fds)
            if isinstance(message, Headers):
                _answer(reply, message)
                return
            if isinstance(message, Failed):
                _answer(reply, Headers(None, message.error))
                return
    finally:
        zygote.close()


# Compile workers' parents running now, killed when the server goes.
_RUNNING: set[subprocess.Popen[bytes]] = set()


class Zygote:
    """The compile workers' parent (`python -I -m exporter.compiler`): it imports bcc once and
    forks a child for each share of jobs; it lives for one start, reload or header check."""

    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket, stderr: IO[bytes]):
        self.process = process
        self.sock = sock
        self.stderr = stderr
        self._lock = threading.Lock()

    @classmethod
    def start(cls, python: str, preload: bool = True) -> Zygote:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the zygote's life
        with theirs:
            try:
                process = runner.start(
                    python,
                    COMPILE_WORKER,
                    [str(theirs.fileno()), *([] if preload else ["--no-preload"])],
                    pass_fds=[theirs.fileno()],
                    stderr=stderr,
                )
            except OSError:
                ours.close()
                stderr.close()
                raise
        _RUNNING.add(process)
        return cls(process, ours, stderr)

    def share(
        self, jobs: list[Job], timeout: float, cancelled: Callable[[], bool]
    ) -> Iterator[tuple[Reply, list[int]]]:
        """One child on a batch of jobs: for each job it answers, Compiling and then its
        Loaded/Failed/Headers; if it dies or takes over `timeout` on a job, Failed for that job
        (stage "worker") and nothing after: the caller sends the rest in another share."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours:
            try:
                with theirs, self._lock:
                    wire.send(
                        self.sock, {"jobs": [job.to_json() for job in jobs]}, [theirs.fileno()]
                    )
            except OSError:
                yield _failed(jobs[0], self._died(), _tail(self.stderr)), []
                return
            yield from self._answers(ours, jobs, timeout, cancelled)

    def _answers(
        self, sock: socket.socket, jobs: list[Job], timeout: float, cancelled: Callable[[], bool]
    ) -> Iterator[tuple[Reply, list[int]]]:
        stderr: IO[bytes] | None = None
        pid = 0
        answered = 0
        sock.settimeout(timeout)
        try:
            while answered < len(jobs) and not cancelled():
                try:
                    message, fds = wire.receive(sock)
                except TimeoutError:
                    if pid:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
                    why = f"compile worker timed out after {timeout:g} s"
                    yield _failed(jobs[answered], why, _tail(stderr)), []
                    return
                if "exited" in message or not message:
                    said = _tail(stderr) if stderr else _tail(self.stderr)
                    how = (
                        f"compile worker died {_how(message['exited'])}"
                        if message
                        else self._died()
                    )
                    yield _failed(jobs[answered], how, said), []
                    return
                if "compiling" in message:
                    if stderr is not None:
                        stderr.close()
                    stderr, pid = os.fdopen(fds[0], "rb"), int(message["pid"])
                    yield Compiling(_name(jobs[answered])), []
                    continue
                yield _result(jobs[answered], message, _tail(stderr)), fds
                answered += 1
        finally:
            if stderr is not None:
                stderr.close()
            if answered < len(jobs) and pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)  # cancelled: nobody takes its programs

    def _died(self) -> str:
        code = self.process.poll()
        return "the compile workers' parent " + (
            "is gone" if code is None else f"died {_how(code)}"
        )

    def close(self) -> None:
        """EOF: it leaves once its children have."""
        self.sock.close()
        _reap(self.process)
        _RUNNING.discard(self.process)
        self.stderr.close()


def _how(code: int) -> str:
    if code < 0:
        return f"(killed by {signal.Signals(-code).name})"
    return f"(exited with status {code})"


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


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
