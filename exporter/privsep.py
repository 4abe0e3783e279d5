"""Privilege separation: a privileged spawner starts compile workers, the server holds no
capabilities.

Loading and attaching BPF needs capabilities (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, ...); reading
the maps through fds already held does not, and neither do the other things the server does
once started (see README, Security). So at start, before any program is loaded, the daemon
starts the spawner, a small process of its own (`python -m exporter.privsep`: a fresh
interpreter, so it inherits no fds, threads or memory of the server), which keeps the
capabilities and does one thing: on request over a Unix socketpair it runs a compile worker
for a batch of jobs and relays the worker's messages and fds back as they come (SCM_RIGHTS,
passed through and closed on its side). Then the server drops every capability (capset(2))
and sets PR_SET_NO_NEW_PRIVS. Every load, the first ones included, goes through the spawner,
so the path reloads take is the one tested by every start.

The spawner:
- runs one fixed command, the compile worker of the interpreter named at its start
  (--loader.python); a request carries jobs and nothing else, each checked strictly (the two
  shapes the worker takes; cflags limited to -D/-U/-I/-W/-O/-std=/-g: no -fplugin, -Xclang
  -load or output files);
- dies with the server: PR_SET_PDEATHSIG (SIGKILL) and EOF on its socket, and kills the
  workers still running then;
- stays small: standard library only (it does not even import exporter.loader's package,
  whose config models cost 22 MB).

A request is one SEQPACKET message, `{"jobs": [{...}, ...]}` plus one fd: a fresh socket the
replies go to, so that concurrent loads each get their own answers. The replies are in the wire
format of exporter.loader.handoff: `{"meta": <a worker's message>}` with its fds, for each job
`{"compiling": index}` with the job's stderr (a file) and then the job's result; and last,
if the worker did not answer every job (it could not start, died or timed out),
`{"error": "..."}`. run_worker produces the same replies for a server without a spawner.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import capabilities
from .errors import ExporterError

if TYPE_CHECKING:
    from .loader import handoff
else:
    # The wire format alone: importing it as exporter.loader.handoff would run the loader
    # package's __init__, which imports the config models (pydantic: +22 MB, 0.3 s).
    _spec = importlib.util.spec_from_file_location(
        "_bcc_exporter_handoff", Path(__file__).parent / "loader" / "handoff.py"
    )
    handoff = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(handoff)

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
READY = b"ready"
START_TIMEOUT = 30.0
# On top of the worker's own timeout, which the spawner enforces.
REPLY_GRACE = 30.0
MAX_PARALLEL = 32  # workers at once; the server asks for at most one per core
STOP_TIMEOUT = 5.0

NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MEMBER = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*(\.[a-zA-Z_][a-zA-Z0-9_]*)*")  # bi_iter.bi_sector
# Flags that only define, include or tune: nothing that loads code (-fplugin, -Xclang -load,
# -mllvm) or writes files (-MF, -o, -Wp,...).
CFLAG = re.compile(
    r"-D.+|-U[a-zA-Z_][a-zA-Z0-9_]*|-I.+|-W[a-zA-Z0-9=_-]+|-O[0-3sz]?|-std=[\w+]+|-g"
)
# The largest request one send(2) takes with the default socket buffer (net.core.wmem_default,
# 212992 bytes, less the kernel's overhead); the server sends larger batches in parts.
MAX_REQUEST = 200_000
COMPILE_KEYS = {"code", "cflags", "probes", "perf_maps"}
HEADER_KEYS = {"header_fields"}


# One message of a worker's answer to a batch of jobs, with its fds (see the module's doc).
Reply = tuple[dict[str, Any], list[int]]


class PrivsepError(ExporterError):
    """Privilege separation could not be set up; the daemon does not start."""


class RequestError(ValueError):
    """A request the spawner refuses."""


# ---------------------------------------------------------------------------- both sides


def check_jobs(jobs: Any) -> list[dict[str, Any]]:
    """The jobs if they are a non-empty list of jobs check_job takes, else RequestError."""
    if not isinstance(jobs, list) or not jobs:
        raise RequestError("jobs: a non-empty list of jobs")
    for index, job in enumerate(jobs):
        try:
            check_job(job)
        except RequestError as err:
            raise RequestError(f"jobs[{index}]: {err}") from None
    return jobs


def check_job(job: Any) -> dict[str, Any]:
    """The job if it is one of the two shapes a compile worker takes, else RequestError."""
    if not isinstance(job, dict):
        raise RequestError("a job is a JSON object")
    if set(job) == HEADER_KEYS:
        fields = job["header_fields"]
        if not isinstance(fields, list) or not all(
            isinstance(f, list)
            and len(f) == 2
            and _is_name(f[0])
            and isinstance(f[1], str)
            and MEMBER.fullmatch(f[1])
            for f in fields
        ):
            raise RequestError("header_fields: a list of [struct, member] C names")
        return job
    if set(job) != COMPILE_KEYS:
        raise RequestError(
            f"a job has the keys {sorted(COMPILE_KEYS)} or {sorted(HEADER_KEYS)}, not {sorted(job)}"
        )
    if not isinstance(job["code"], str):
        raise RequestError("code: a string")
    cflags = job["cflags"]
    if not isinstance(cflags, list) or not all(isinstance(f, str) for f in cflags):
        raise RequestError("cflags: a list of strings")
    for flag in cflags:
        if not CFLAG.fullmatch(flag):
            raise RequestError(
                f"cflags: {flag!r} is not allowed (only -DNAME[=VALUE], -UNAME, -IDIR, -W..., "
                "-O..., -std=..., -g, each as one flag)"
            )
    probes = job["probes"]
    if not isinstance(probes, list):
        raise RequestError("probes: a list")
    for probe in probes:
        if (
            not isinstance(probe, dict)
            or set(probe) != {"function", "attach"}
            or not _is_name(probe["function"])
            or not isinstance(probe["attach"], list)
            or not probe["attach"]
            or not all(isinstance(a, str) for a in probe["attach"])
        ):
            raise RequestError("probes: each is {function: C identifier, attach: [probe, ...]}")
    perf_maps = job["perf_maps"]
    if not isinstance(perf_maps, list) or not all(_is_name(m) for m in perf_maps):
        raise RequestError("perf_maps: a list of map names")
    return job


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and NAME.fullmatch(value) is not None


def _env() -> dict[str, str]:
    """The daemon's environment, with this package findable from any working directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# ---------------------------------------------------------------------------- server side


def _request(jobs: list[dict[str, Any]]) -> bytes:
    return json.dumps({"jobs": jobs}).encode()


def _sendable(jobs: list[dict[str, Any]]) -> tuple[int, str | None]:
    """How many of the jobs, from the first, one request takes; and why the next one can
    never be sent, or None (it goes in another request, or there is none)."""
    size = len(_request([]))
    for count, job in enumerate(jobs):
        encoded = json.dumps(job)
        try:
            check_job(json.loads(encoded))  # as the spawner will see it (no tuples)
        except RequestError as err:
            return count, f"not a job the privileged spawner takes: {err}"
        size += len(encoded) + (2 if count else 0)  # json's ", " between jobs
        if size > MAX_REQUEST:
            return count, None if count else f"job of {size} bytes: over {MAX_REQUEST}"
    return len(jobs), None


class Spawner:
    """The server's handle on the spawner, with loader.Worker's contract (run)."""

    def __init__(
        self, process: subprocess.Popen[bytes], sock: socket.socket, timeout: float
    ) -> None:
        self.process = process
        self.sock = sock
        self.timeout = timeout
        self._closing = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, python: str, timeout: float) -> Spawner:
        """Start the spawner; it runs `python -m exporter.loader` for each job, for at most
        `timeout` seconds. Call from the thread that lives as long as the server: the
        spawner's PR_SET_PDEATHSIG fires when the thread that started it exits."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            try:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "exporter.privsep",
                        str(theirs.fileno()),
                        str(os.getpid()),
                        python,
                        repr(float(timeout)),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    pass_fds=[theirs.fileno()],
                    env=_env(),
                )
            except OSError as err:
                ours.close()
                raise PrivsepError(f"cannot start the privileged spawner: {err}") from None
        spawner = cls(process, ours, timeout)
        ours.settimeout(START_TIMEOUT)
        try:
            hello = ours.recv(len(READY))
        except OSError as err:
            hello = f"{err}".encode()
        ours.settimeout(None)
        if hello != READY:
            spawner.close()
            raise PrivsepError(
                f"the privileged spawner did not start ({spawner._status() or hello!r})"
            )
        return spawner

    def run(self, jobs: list[dict[str, Any]]) -> Iterator[Reply]:
        """loader.Worker.run's contract: the replies to a prefix of the jobs, at least one.
        A job this side refuses ends the prefix and gets its error; one that would make the
        request too large ends it without (the caller sends it again, with the rest)."""
        sent, refused = _sendable(jobs)
        for reply in self._run(jobs[:sent]) if sent else ():
            yield reply
            if "error" in reply[0]:
                return
        if refused is not None:
            yield {"error": refused}, []

    def _run(self, jobs: list[dict[str, Any]]) -> Iterator[Reply]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours:
            try:
                with theirs:
                    socket.send_fds(self.sock, [_request(jobs)], [theirs.fileno()])
            except OSError as err:
                yield {"error": self._gone(err)}, []
                return
            ours.settimeout(self.timeout + REPLY_GRACE)
            answered = 0
            while answered < len(jobs):
                try:
                    reply, fds = handoff.receive(ours)
                except TimeoutError:
                    reply, fds = (
                        {"error": f"the privileged spawner did not answer in {self.timeout:g} s"},
                        [],
                    )
                except (OSError, ValueError) as err:
                    reply, fds = {"error": self._gone(err)}, []
                yield reply or {"error": self._gone(None)}, fds
                if "meta" not in reply:
                    return
                answered += "compiling" not in reply["meta"]

    def _status(self) -> str | None:
        code = self.process.poll()
        if code is None:
            return None
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def _gone(self, err: OSError | ValueError | None) -> str:
        if self._closing:
            return "the daemon is stopping"
        how = self._status() or (f"{err}" if err else "it closed the connection")
        return (
            f"the privileged spawner that compiles programs is gone ({how}): no program can be "
            "compiled until the daemon restarts (the running ones keep running)"
        )

    def watch(self) -> None:
        """Log as soon as the spawner dies, not only at the next reload."""

        def wait() -> None:
            self.process.wait()
            if not self._closing:
                log.error("%s", self._gone(None))

        threading.Thread(target=wait, name="spawner-watch", daemon=True).start()

    def close(self) -> None:
        """EOF tells the spawner to leave; it is killed if it does not."""
        self._closing = True
        self.sock.close()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def separate(python: str, timeout: float, keep: frozenset[int]) -> Spawner:
    """Start the spawner, then drop this process's capabilities but `keep` for good.

    Call after everything that needs privilege at open time is open (the listening socket,
    the BPF_ENABLE_STATS fd, tracefs mounted) and while this is the process's only thread."""
    from . import kallsyms  # light; only the server side needs it

    spawner = Spawner.start(python, timeout)
    try:
        # The kernel decides at open(2) whether a reader of /proc/kallsyms sees addresses
        # (CAP_SYSLOG, or kptr_restrict 0 with perf_event_paranoid <= 1): read it through
        # an fd opened now (ksym decoder, kaddrs).
        kallsyms.hold()
        _raise_memlock()
        needed = _bpf_needs_capability()
        if needed is not None and needed not in keep:
            log.warning(
                "this kernel refuses every bpf(2) command, map reads through held fds "
                "included, to a process without %s while kernel.unprivileged_bpf_disabled "
                "is set (kernels before ~6.0): the server keeps %s",
                capabilities.NAMES[needed],
                capabilities.NAMES[needed],
            )
            keep = keep | {needed}
        kept = capabilities.drop(keep)
        capabilities.no_new_privs()
        if keep - kept:
            log.warning(
                "--capabilities.keep: this process never had %s",
                ", ".join(capabilities.names(keep - kept)),
            )
    except (capabilities.CapabilityError, OSError) as err:
        spawner.close()
        raise PrivsepError(f"cannot drop privileges: {err}") from None
    log.info(
        "privilege separation: compile workers are started by the spawner (pid %d); this "
        "process keeps %s",
        spawner.pid,
        ", ".join(capabilities.names(kept)) or "no capabilities",
    )
    spawner.watch()
    return spawner


def _raise_memlock() -> None:
    """Each perf ring the server maps is charged to RLIMIT_MEMLOCK past the per-user
    allowance (kernel.perf_event_mlock_kb per CPU); without CAP_IPC_LOCK past that it fails.
    Raise it as far as allowed while the capabilities are still there."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    for wanted in (resource.RLIM_INFINITY, hard):
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (wanted, wanted))
            return
        except (ValueError, OSError):
            continue


def _bpf_needs_capability() -> int | None:
    """The capability this kernel wants for any bpf(2) command (kernels before ~6.0 with
    kernel.unprivileged_bpf_disabled set), or None: asked of a child with no capabilities."""
    from .bpf.syscall import BPFError, Cmd, _InfoAttr, bpf

    pid = os.fork()
    if pid == 0:  # the child: single-threaded like the parent, so drop() is allowed
        code = 2
        try:
            capabilities.drop(())
            try:
                bpf(Cmd.BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=0xFFFFFFFF))
            except BPFError as err:
                code = 1 if err.errno == errno.EPERM else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 1:
        return None
    # CAP_BPF exists from Linux 5.8; before, bpf(2) wanted CAP_SYS_ADMIN.
    bpf_cap = capabilities.NUMBERS["CAP_BPF"]
    return bpf_cap if capabilities.last_cap() >= bpf_cap else capabilities.NUMBERS["CAP_SYS_ADMIN"]


# ---------------------------------------------------------------------------- spawner side


def main(argv: list[str]) -> int:
    """`python -m exporter.privsep FD PARENT_PID PYTHON TIMEOUT` (started by Spawner.start)."""
    fd, parent, python, timeout = int(argv[0]), int(argv[1]), argv[2], float(argv[3])
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
    serve(sock, python, timeout)
    # Their programs would only be closed again: the server that wanted them is gone.
    for process in list(_RUNNING):
        with contextlib.suppress(OSError):
            process.kill()
    return 0


def serve(sock: socket.socket, python: str, timeout: float) -> None:
    """Answer requests until the server closes its end."""
    slots = threading.BoundedSemaphore(MAX_PARALLEL)
    while True:
        try:
            data, fds, flags, _ = socket.recv_fds(sock, handoff.MAX_MESSAGE, 1)
        except OSError as err:
            log.error("cannot read requests: %s", err)
            return
        if not data and not fds:
            return  # EOF: the server is gone
        try:
            reply = _reply_socket(fds, flags)
        except RequestError as err:
            _close_all(fds)
            log.warning("refused a request: %s", err)
            continue
        try:
            request = json.loads(data)
            if not isinstance(request, dict) or set(request) != {"jobs"}:
                raise RequestError('a request is {"jobs": [{...}, ...]}')
            jobs = check_jobs(request["jobs"])
        except (RequestError, ValueError) as err:
            log.warning("refused a request: %s", err)
            with reply:
                _answer(reply, {"error": f"the privileged spawner refused the job: {err}"}, [])
            continue
        slots.acquire()
        threading.Thread(target=_handle, args=(reply, jobs, python, timeout, slots)).start()


def _reply_socket(fds: list[int], flags: int) -> socket.socket:
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        raise RequestError("message or fds truncated")
    if len(fds) != 1:
        raise RequestError(f"a request carries exactly one fd, not {len(fds)}")
    if not stat.S_ISSOCK(os.fstat(fds[0]).st_mode):
        raise RequestError("the request's fd is not a socket")
    reply = socket.socket(fileno=fds[0])
    if reply.family != socket.AF_UNIX or reply.type != socket.SOCK_SEQPACKET:
        reply.detach()
        raise RequestError("the request's fd is not a Unix SEQPACKET socket")
    return reply


def _handle(
    reply: socket.socket,
    jobs: list[dict[str, Any]],
    python: str,
    timeout: float,
    slots: threading.BoundedSemaphore,
) -> None:
    try:
        with reply:
            answers = run_worker(jobs, python, timeout)
            for message, fds in answers:
                try:
                    if not _answer(reply, message, fds):
                        answers.close()  # kills the worker: nobody takes its programs
                finally:
                    # The server holds them now (or is gone): a copy kept here would keep the
                    # program attached after the server closed its own.
                    _close_all(fds)
    finally:
        slots.release()


def _answer(reply: socket.socket, message: dict[str, Any], fds: list[int]) -> bool:
    try:
        handoff.send(reply, message, fds)
        return True
    except OSError as err:  # the server gave up waiting, or died
        log.warning("cannot answer the server: %s", err)
        return False


# Workers running now, killed when the server goes.
_RUNNING: set[subprocess.Popen[bytes]] = set()


def run_worker(
    jobs: list[dict[str, Any]], python: str, timeout: float
) -> Generator[Reply, None, None]:
    """The compile worker (the only command this process runs) on a batch of jobs: its
    messages as `{"meta": ...}` replies, then `{"error": ...}` if it did not answer every job:
    it could not start, died, or took over `timeout` seconds on one job (it is killed)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with parent, tempfile.TemporaryFile() as stderr:
        with child:
            try:
                process = subprocess.Popen(
                    [python, "-m", "exporter.loader", str(child.fileno())],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    pass_fds=[child.fileno()],
                    env=_env(),
                )
            except OSError as err:
                yield {"error": f"cannot run the compile worker: {err}"}, []
                return
        _RUNNING.add(process)
        answered = 0
        try:
            _write_jobs(process, jobs)
            parent.settimeout(timeout)
            while answered < len(jobs):
                try:
                    message, fds = handoff.receive(parent)
                except TimeoutError:
                    process.kill()
                    yield {"error": f"compile worker timed out after {timeout:g} s"}, []
                    return
                if not message:
                    yield {"error": _died(process, stderr)}, []
                    return
                answered += "compiling" not in message
                yield {"meta": message}, fds
        finally:
            if answered < len(jobs):
                process.kill()
            _reap(process)
            _RUNNING.discard(process)


def _write_jobs(process: subprocess.Popen[bytes], jobs: list[dict[str, Any]]) -> None:
    assert process.stdin is not None
    try:
        process.stdin.write(json.dumps(jobs).encode())
    except BrokenPipeError:
        pass  # it died at once: its stderr says why
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()


def _died(process: subprocess.Popen[bytes], stderr: Any) -> str:
    """Why the worker stopped answering: how it ended, and what it said before its first job
    took its stderr (a worker that cannot even start says why there)."""
    _reap(process)
    code = process.returncode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    stderr.seek(0)
    said = stderr.read().decode(errors="replace").strip().splitlines()[-3:]
    return f"compile worker died ({how})" + (": " + " | ".join(said) if said else "")


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
