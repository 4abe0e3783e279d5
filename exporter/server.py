"""Server stage: an ASGI app under uvicorn serving /metrics, /, and /healthz.

Collection reads BPF maps and decodes keys: it runs in a thread so the event loop keeps
answering other requests (health checks, concurrent scrapes) meanwhile. Concurrent scrapes
share collections (`SingleFlight`) and, within one, each encoding's body (`Scrape`).

With --web.config.file, `Guard` wraps the app (basic auth, extra headers) and uvicorn serves
TLS with the context `exporter.web_config` built.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import html
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from email.utils import formatdate
from types import FrameType
from typing import Any

import h11
import uvicorn
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder, gzip_accepted
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import memory
from .metrics import exposition
from .metrics.self_metrics import PREFIX, ExporterCollector
from .web_config import OPEN_PATHS, BasicAuth, WebConfig

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Body = tuple[bytes, str, list[tuple[str, str]]]  # body, content type, extra headers


class Scrape:
    """One collection of the registry; each encoding's body is rendered once, for every
    request that shares the collection and asks for that encoding."""

    def __init__(self, registry: CollectorRegistry, duration: Histogram) -> None:
        started = time.perf_counter()
        self.families: list[Metric] = list(registry.collect())
        self.collect_seconds = time.perf_counter() - started
        self.duration = duration
        self._bodies: dict[tuple[str, bool], Body] = {}
        self._lock = threading.Lock()

    def body(self, accept: str, accept_encoding: str) -> Body:
        content_type = choose_encoder(accept)[1]  # names the format, version and escaping
        key = (content_type, gzip_accepted(accept_encoding))
        with self._lock:
            if key not in self._bodies:
                started = time.perf_counter()
                self._render(accept, *key)
                self.duration.observe(self.collect_seconds + time.perf_counter() - started)
            return self._bodies[key]

    def _render(self, accept: str, content_type: str, gzipped: bool) -> bytes:
        """A gzip body compresses the plain one of its format, rendered at most once too."""
        key = (content_type, gzipped)
        if key not in self._bodies:
            if gzipped:
                body = gzip.compress(self._render(accept, content_type, False), compresslevel=1)
                self._bodies[key] = body, content_type, [("content-encoding", "gzip")]
            else:
                self._bodies[key] = exposition.render(self.families, accept)[0], content_type, []
        return self._bodies[key][0]


class SingleFlight:
    """Concurrent scrapes share one collection instead of each collecting in full.

    A request never gets a collection that began before it arrived: a scrape must show the
    state at or after its request, and a collection already running may have read some
    maps before it. Requests arriving while one runs wait for the next, and all of them
    share it: one collection a round, however many scrapers, at the cost of waiting for at
    most one collection in progress. Collections run one at a time, so a scraper's
    successive scrapes never go backwards.
    """

    def __init__(self, collect: Callable[[], Scrape], idle: Callable[[], None]) -> None:
        self._collect = collect
        self._idle = idle  # run in a thread when a round of collections ends
        self._next: asyncio.Future[Scrape] | None = None  # what requests arriving now get
        self._runner: asyncio.Task[None] | None = None

    async def get(self) -> Scrape:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        future = self._next
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())
        # A client that goes away must not cancel the collection others wait for.
        return await asyncio.shield(future)

    async def _run(self) -> None:
        try:
            while self._next is not None:
                future, self._next = self._next, None
                try:
                    future.set_result(await asyncio.to_thread(self._collect))
                except Exception as err:  # noqa: BLE001 - every waiter gets it: a 500 each
                    future.set_exception(err)
                if self._next is None:  # requests arriving meanwhile are served next
                    await asyncio.to_thread(self._idle)
        finally:
            self._runner = None


# The HTTP versions the h11 protocol speaks.
HTTP_VERSIONS = ("1.0", "1.1")


class App:
    def __init__(
        self,
        registry: CollectorRegistry,
        exporter: ExporterCollector,
        telemetry_path: str,
        reload: Callable[[], str | None] | None = None,
    ) -> None:
        self.registry = registry
        self.exporter = exporter
        self.telemetry_path = telemetry_path
        # /-/reload, as Prometheus: only with --web.enable-lifecycle; returns the error or None.
        self.reload = reload
        self.scrape_duration = Histogram(
            f"{PREFIX}_scrape_duration_seconds",
            "Time to collect and render one /metrics body; concurrent scrapes share bodies.",
            registry=registry,
        )
        self.scrapes = SingleFlight(
            lambda: Scrape(self.registry, self.scrape_duration), memory.Trimmer()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["http_version"] not in HTTP_VERSIONS:
            # h11 takes any HTTP/d.d (HTTP/9.9 too) for a request this server would answer.
            await _respond(send, 505, b"HTTP version not supported\n", "text/plain")
            return
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if path in (self.telemetry_path, "/", "/healthz") and method not in ("GET", "HEAD"):
            await _respond(
                send, 405, b"method not allowed\n", "text/plain", [("allow", "GET, HEAD")]
            )
        elif path == self.telemetry_path:
            scrape = await self.scrapes.get()
            body, content_type, extra = await asyncio.to_thread(
                scrape.body, headers.get("accept", ""), headers.get("accept-encoding", "")
            )
            await _respond(send, 200, body, content_type, extra, head=method == "HEAD")
        elif path == "/healthz":
            await _respond(send, 200, b"ok\n", "text/plain", head=method == "HEAD")
        elif path == "/-/reload":
            await self._reload(method, send)
        elif path == "/":
            await _respond(send, 200, self.landing_page(), "text/html", head=method == "HEAD")
        else:
            await _respond(send, 404, b"not found\n", "text/plain")

    async def _reload(self, method: str, send: Send) -> None:
        if method not in ("POST", "PUT"):
            await _respond(send, 405, b"only POST or PUT\n", "text/plain", [("allow", "POST, PUT")])
        elif self.reload is None:
            await _respond(send, 403, b"Lifecycle API is not enabled.\n", "text/plain")
        else:
            error = await asyncio.to_thread(self.reload)  # compiles in workers: seconds
            if error is None:
                await _respond(send, 200, b"", "text/plain")
            else:
                await _respond(
                    send, 500, f"failed to reload config: {error}\n".encode(), "text/plain"
                )

    def landing_page(self) -> bytes:
        rows = [
            (s.program, s.state, ", ".join(f"{f} ← {p}" for f, p in s.probes) or s.error)
            for s in self.exporter.status
        ]
        table = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{s}</td><td>{html.escape(d)}</td></tr>"
            for n, s, d in rows
        )
        path = html.escape(self.telemetry_path)
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>bcc_exporter</title></head>"
            f"<body><h1>bcc_exporter</h1><p><a href='{path}'>Metrics</a></p>"
            "<table border='1' cellpadding='4'><tr><th>program</th><th>state</th>"
            f"<th>probes / error</th></tr>{table}</table></body></html>\n"
        ).encode()


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[str, str]] | None = None,
    head: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        # Ours, not uvicorn's: its Date needs a timer waking the idle daemon every second.
        (b"date", formatdate(usegmt=True).encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in extra or []]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


class Guard:
    """exporter-toolkit's web handler: the configured headers on every response (401 too),
    and basic auth on every path but OPEN_PATHS, answering 401 with `WWW-Authenticate: Basic`."""

    def __init__(
        self, app: ASGIApp, auth: BasicAuth | None, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.app = app
        self.auth = auth
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and self.headers:
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        if self.auth is not None and scope["path"] not in OPEN_PATHS:
            authorization = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"authorization"),
                None,
            )
            if not await self.auth.check(authorization):
                await _respond(
                    send_with_headers,
                    401,
                    b"Unauthorized\n",
                    "text/plain; charset=utf-8",
                    [("www-authenticate", "Basic")],
                )
                return
        await self.app(scope, receive, send_with_headers)


# A request head must arrive whole within this of the connection opening or of the previous
# response: uvicorn alone times out only idle keep-alive connections, not silent or
# trickling ones before a request, which would hold an fd each for ever.
REQUEST_HEAD_SECONDS = 5.0


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head, and no second response
    to a request whose malformed body uvicorn answered with a 400 itself."""

    _head_timer: asyncio.TimerHandle | None = None
    _waiting_after: object = None  # the cycle before the request the deadline is for

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def _await_head(self) -> None:
        self._cancel_head_timer()
        self._waiting_after = self.cycle
        self._head_timer = self.loop.call_later(REQUEST_HEAD_SECONDS, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.cycle is self._waiting_after and not self.transport.is_closing():
            with contextlib.suppress(h11.LocalProtocolError):
                self.conn.send(h11.ConnectionClosed())
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._waiting_after:  # a request head arrived: a new cycle
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        # Armed first: pipelined requests may start their cycles within super()'s call.
        if not self.transport.is_closing():
            self._await_head()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # The app, still running for this request, must not answer it too: h11 would raise
        # (a traceback in the log for every such request).
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            super().send_400_response(msg)
        else:  # the app has answered already: a 400 cannot follow, only a close
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


def serve(app: App, listener: socket.socket, web: WebConfig | None = None) -> None:
    """Serve until SIGTERM or SIGINT; over TLS and behind basic auth as `web` says."""
    auth = web.authenticator() if web else None
    asgi: ASGIApp = Guard(app, auth, web.headers) if web else app
    tls = web.tls if web else None
    config = uvicorn.Config(
        asgi,
        log_config=None,
        access_log=False,
        lifespan="off",
        http=_Protocol,
        date_header=False,  # _respond writes it: see _Server
        timeout_graceful_shutdown=1,
        # The context is built whole (versions, client CA) by web_config; uvicorn's ssl_*
        # parameters cannot say min_version.
        ssl_context_factory=(lambda _config, _default: tls) if tls else None,
    )
    try:
        _Server(config).run(sockets=[listener])
    finally:
        if auth:
            auth.close()
