"""The server's handle on the privileged spawner: start it, ask it (Reload, CheckHeaders),
stop it. The replies are exporter.workers.messages Replies, with their fds."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

from ..errors import ExporterError
from ..workers import runner, wire
from ..workers.messages import (
    MessageError,
    Refused,
    Reply,
    Request,
    decode_reply,
    encode_request,
)
from .spawner import READY, Options

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
# On top of the compile timeout of one job, which the spawner enforces on each.
REPLY_GRACE = 30.0


class Replies:
    """What the spawner answers to one request, read as the caller iterates; each reply's
    fds are the caller's. close() (or the end of the answer) closes the request's socket,
    whether or not anything was read."""

    def __init__(self, sock: socket.socket | None, replies: Iterator[tuple[Reply, list[int]]]):
        self._sock = sock
        self._replies = replies

    def __iter__(self) -> Replies:
        return self

    def __next__(self) -> tuple[Reply, list[int]]:
        try:
            return next(self._replies)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


class PrivsepError(ExporterError):
    """The spawner could not be started; the daemon does not start."""


class Spawner:
    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket, timeout: float):
        self.process = process
        self.sock = sock
        self.timeout = timeout
        self._closing = False
        self._ready = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def closing(self) -> bool:
        return self._closing

    @classmethod
    def start(cls, options: Options) -> Spawner:
        """Start the spawner (isolated, from /), without waiting for it: requests may be sent
        at once (they wait in the socket), and ready() says whether it came up. Call from the
        thread that lives as long as the server: its PR_SET_PDEATHSIG fires when the thread
        that started it exits."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            try:
                process = runner.start(
                    sys.executable,
                    "exporter.privsep",
                    [str(theirs.fileno()), str(os.getpid()), *options.to_args()],
                    pass_fds=[theirs.fileno()],
                )
            except OSError as err:
                ours.close()
                raise PrivsepError(f"cannot start the privileged spawner: {err}") from None
        return cls(process, ours, options.timeout)

    def ready(self) -> None:
        """Wait for the spawner's hello (once); PrivsepError, the spawner closed, if it does
        not come."""
        if self._ready:
            return
        self.sock.settimeout(START_TIMEOUT)
        try:
            hello = self.sock.recv(len(READY))
        except OSError as err:
            hello = f"{err}".encode()
        self.sock.settimeout(None)
        if hello != READY:
            self.close()
            raise PrivsepError(
                f"the privileged spawner did not start ({self._status() or hello!r})"
            )
        self._ready = True

    def ask(self, request: Request) -> Replies:
        """Send `request` now; the spawner's replies, read as the caller iterates, until it
        stops answering (a Refused one says why it could not: it is gone, it timed out)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with theirs:
                socket.send_fds(self.sock, [encode_request(request)], [theirs.fileno()])
        except OSError as err:
            ours.close()
            return Replies(None, iter([(Refused(self._gone(err)), [])]))
        return Replies(ours, self._replies(ours))

    def _replies(self, sock: socket.socket) -> Iterator[tuple[Reply, list[int]]]:
        sock.settimeout(self.timeout + REPLY_GRACE)
        while True:
            try:
                message, fds = wire.receive(sock)
                reply = decode_reply(message) if message else None
            except TimeoutError:
                yield (
                    Refused(f"the privileged spawner did not answer in {self.timeout:g} s"),
                    [],
                )
                return
            except (OSError, MessageError) as err:
                yield Refused(self._gone(err)), []
                return
            if reply is None:
                return  # it closed the reply socket: the answer is complete
            yield reply, fds

    def _status(self) -> str | None:
        code = self.process.poll()
        if code is None:
            return None
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def _gone(self, err: Exception | None) -> str:
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
        """EOF tells the spawner to leave (it is root's: a server without privileges could
        not kill it; it dies with the server anyway)."""
        self._closing = True
        self.sock.close()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(PermissionError):
                self.process.kill()
            self.process.wait()
