"""Everything that reaches into uvicorn beyond its public `Config`/`Server.run`: one module, for
the uvicorn versions pyproject.toml pins. tests/fault/test_http_abuse.py and
tests/kernel/test_web_security.py are its tripwire: each bound below has a test there that
fails when a uvicorn release moves what it hooks.

What uvicorn alone lacks, and this adds (each one a way for one client to cost the daemon
without bound):
- a bound on a request head's size (llhttp, under uvicorn's httptools protocol, has none: a
  client could send headers until memory runs out), answered with a 400 as h11's is;
- a deadline for each request head, the TLS handshake included (uvicorn times out only idle
  keep-alive connections; asyncio gives a handshake 60 s);
- a deadline for a stalled write: a client that stops reading is dropped, not kept with its
  response buffered for ever;
- a cap on open connections below the fd limit: excess ones are reset at once;
- accept errors (EMFILE) logged at most once a second, with a count (asyncio logs one
  traceback per failed accept: hundreds of thousands of lines a second);
- no second response to a request whose malformed body uvicorn answered with a 400 itself;
- an answer to a client that half-closes after its request;
- SIGTERM/SIGINT that stop the server without re-raising, and no timer waking the idle
  daemon ten times a second.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import resource
import socket
import ssl
import struct
import time
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .app import ASGIApp

log = logging.getLogger("bcc_exporter.http")

# A request head (request line and headers) longer than this is answered with a 400, as h11's
# default limit on an incomplete event: a scrape's head is a few hundred bytes.
MAX_HEAD_BYTES = 16 * 1024
# A request head must arrive whole within this of the connection's accept (the TLS
# handshake included) or of the previous response: uvicorn alone times out only idle
# keep-alive connections, not silent or trickling ones before a request, which would hold
# an fd each for ever.
REQUEST_HEAD_SECONDS = 5.0
# A response whose client took nothing of it for this long is dropped: its unsent part would
# stay in memory as long as the client likes.
STALLED_WRITE_SECONDS = 5.0
# The kernel's send buffer of a connection (it doubles this for its bookkeeping). Autotuned,
# it grows to 4 MB (tcp_wmem), which a client that does not read fills with its response:
# kernel memory no RSS shows. 128 KiB still sends 1 MB/s at 100 ms of round trip.
SEND_BUFFER = 128 * 1024
# Connections open at once, at most (fewer when the fd limit is low): far more than any
# set of scrapers needs, few enough that their buffers stay small beside the daemon.
MAX_CONNECTIONS = 1024
# What the fds of programs, their reload (old and new side by side) and the daemon's own
# files may need beyond connections.
FD_RESERVE = 64
# As cli.bind listens: uvicorn's default (2048) would re-listen with it, and asyncio tries
# that many accepts in a row on each wakeup.
BACKLOG = 128
# Connections accepted but not yet counted, or refused but not yet closed: asyncio accepts
# up to BACKLOG a loop iteration, and takes up to three more to count or to close one.
IN_FLIGHT = 4 * BACKLOG
ACCEPT_EXHAUSTED = "socket.accept() out of system resource"


def connection_limit() -> int:
    """MAX_CONNECTIONS, or fewer: what the fd limit leaves after the fds open now (twice,
    for a reload), FD_RESERVE and IN_FLIGHT."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    in_use = len(os.listdir("/proc/self/fd"))
    return max(1, min(MAX_CONNECTIONS, soft - 2 * in_use - FD_RESERVE - IN_FLIGHT))


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    """Cancels `timer`, if there is one."""
    if timer is not None:
        timer.cancel()


class HeadTooLarge(Exception):
    """Raised in a parser callback: llhttp stops and uvicorn answers 400."""


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp parses a request in C: h11's pure-Python parser and
    send path cost ~12% of a small scrape) with a bound on the request head, the head and
    write deadlines and the connection cap, and no second response to a request whose
    malformed body uvicorn answered with a 400."""

    limit = MAX_CONNECTIONS  # serve() sets it
    _head_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None
    _waiting_after: object = None  # the cycle before the request the deadline is for
    _refused = False
    _head_bytes = 0  # of the request head being parsed

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Made at accept; with TLS, connection_made comes after the handshake, which the
        # first head deadline counts from here.
        self._accepted = self.loop.time()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limit:
            self._refused = True
            transport.abort()  # a reset, before any Python object of the connection is made
            return
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._await_head(self._accepted + REQUEST_HEAD_SECONDS)

    def _await_head(self, deadline: float) -> None:
        self._cancel_head_timer()
        self._waiting_after = self.cycle
        self._head_timer = self.loop.call_at(deadline, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        _cancel(self._head_timer)
        self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.cycle is self._waiting_after and not self.transport.is_closing():
            # abort, not close: a TLS close would wait up to 30 s for the peer's close_notify.
            self.transport.abort()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        # llhttp hands a long header over in pieces as they arrive: counted before it is kept.
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge  # llhttp raises HttpParserCallbackError: uvicorn answers 400

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._waiting_after:  # a request head arrived: a new cycle
            self._cancel_head_timer()

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio.Protocol's contract
        # A client that half-closes after its request (`nc -N`, shutdown(SHUT_WR)) still gets
        # its answer: the connection stays open for writing until the response is complete,
        # then closes. (uvicorn's returns None: asyncio closes at once, the answer is lost.)
        if self.cycle is None or self.cycle.response_complete:
            return False
        self.cycle.keep_alive = False
        return True

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(STALLED_WRITE_SECONDS, self._write_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_write_timer()

    def _cancel_write_timer(self) -> None:
        _cancel(self._write_timer)
        self._write_timer = None

    def _write_timeout(self) -> None:
        self._write_timer = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:  # a reset: a plain close would keep the unsent data queued
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()  # frees the unsent response; connection_lost follows

    def on_response_complete(self) -> None:
        # Armed first: pipelined requests may start their cycles within super()'s call.
        if not self.transport.is_closing():
            self._await_head(self.loop.time() + REQUEST_HEAD_SECONDS)
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return  # nothing of uvicorn's was set up
        self._cancel_head_timer()
        self._cancel_write_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # The app, still running for this request, must not answer it too: its response
        # would follow the 400 on the closing connection.
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if cycle is None or cycle.response_complete or not cycle.response_started:
            super().send_400_response(msg)
        else:  # the app has begun its answer: a 400 cannot follow, only a close
            self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would kill the
    process before it detaches its programs and exits 0: here a signal only asks it to stop.

    And uvicorn wakes ten times a second to see whether it should stop and to refresh its Date
    header: on this VM every wakeup of an idle Python costs ~1 ms of CPU (cold caches), most
    of an idle daemon's CPU. This one sleeps until a signal asks it to stop, and the app
    writes the Date header itself (uvicorn's is off)."""

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()

        def exceptions(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if context.get("message") == ACCEPT_EXHAUSTED:
                error = context.get("exception")
                log.warning("cannot accept connections: %s; they wait in the backlog", error)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(exceptions)
        if not self.config.ssl:
            await super().startup(sockets)
            return
        # uvicorn passes no TLS timeouts to create_server: asyncio's are 60 s for the
        # handshake and 30 s for the shutdown. Both get the head deadline.
        create_server = loop.create_server
        loop.create_server = functools.partial(  # type: ignore[method-assign]
            create_server,
            ssl_handshake_timeout=REQUEST_HEAD_SECONDS,
            ssl_shutdown_timeout=REQUEST_HEAD_SECONDS,
        )
        try:
            await super().startup(sockets)
        finally:
            del loop.create_server  # the loop's own method again

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        while not await self.on_tick(0):  # sets the default headers, says whether to stop
            await self._wake.wait()
            self._wake.clear()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)  # safe from a signal handler


class OncePerSecond(logging.Filter):
    """Each message at most once a second, with how many were left out before it: asyncio
    logs an accept error per attempt, uvicorn warns once per malformed request, and anyone
    could fill the journal with either."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            return True
        key, now = str(record.msg), time.monotonic()
        if now - self._last.get(key, -1.0) < 1.0:
            self._count[key] = self._count.get(key, 0) + 1
            return False
        self._last[key] = now
        skipped = self._count.pop(key, 0)
        if skipped:
            record.msg = f"{record.msg} ({skipped} more like it in the second before)"
        return True


def run(app: ASGIApp, listener: socket.socket, tls: ssl.SSLContext | None = None) -> None:
    """Serve `app` on `listener` (over TLS with `tls`) until SIGTERM or SIGINT."""
    _Protocol.limit = connection_limit()
    log.info("at most %d connections at once; more are reset", _Protocol.limit)
    for logger in (log, logging.getLogger("uvicorn.error")):
        if not any(isinstance(f, OncePerSecond) for f in logger.filters):
            logger.addFilter(OncePerSecond())
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        loop="asyncio",
        http=_Protocol,
        ws="none",  # no WebSocket upgrade: llhttp hands an Upgrade request to uvicorn otherwise
        backlog=BACKLOG,
        date_header=False,  # the app writes it: see _Server
        # No proxy in front is trusted to say who the client is: the app never asks.
        proxy_headers=False,
        timeout_graceful_shutdown=1,
        # The context is built whole (versions, client CA) by web_config; uvicorn's ssl_*
        # parameters cannot say min_version.
        ssl_context_factory=(lambda _config, _default: tls) if tls else None,
    )
    _Server(config).run(sockets=[listener])
