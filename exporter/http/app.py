"""The ASGI app: /metrics, /, /-/healthy (alias /healthz), /-/ready and /-/reload, and the
Guard in front of it.

Collection reads BPF maps and decodes keys: it runs in a thread so the event loop keeps
answering other requests (health checks, concurrent scrapes) meanwhile. Concurrent scrapes
share collections (`SingleFlight`) and, within one, each encoding's body (`Scrape`).

With --web.config.file, `Guard` wraps the app (basic auth, extra headers) and uvicorn serves
TLS with the context `exporter.http.web_config` built (see exporter.http.uvicorn_compat).
"""

from __future__ import annotations

import asyncio
import gzip
import html
import math
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from email.utils import formatdate
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from .. import memory
from ..metrics import exposition
from ..metrics.self_metrics import ExporterCollector, ScrapeDurations
from ..status import unready
from .basic_auth import BasicAuth, Verdict
from .web_config import HEALTH_PATHS, OPEN_PATHS, READY_PATH

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Body = tuple[bytes, str, list[tuple[str, str]]]  # body, content type, extra headers
T = TypeVar("T")
# A body goes out in slices of this, each after the client took the one before (uvicorn waits
# while the connection's write buffer is above its high-water mark): a client that does not
# read pins one slice of copies, not the whole body (exporter.http.uvicorn_compat drops it).
BODY_SLICE = 64 * 1024
# A collection (or a render) expected to take less than this runs on the event loop: see
# SingleFlight.
INLINE_SECONDS = 0.002


def gzip_accepted(accept_encoding: str) -> bool:
    """Whether `Accept-Encoding` admits gzip (RFC 9110 12.5.3): `gzip` or `*` with a q-value
    above 0, gzip's own entry deciding when both are given. (prometheus_client's namesake
    ignores q, so `gzip;q=0`, which refuses gzip, got it.)"""
    star = None
    for entry in accept_encoding.split(","):
        coding, *params = (part.strip() for part in entry.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0  # a malformed weight admits nothing
        coding = coding.lower()
        if coding in ("gzip", "x-gzip"):
            return q > 0
        if coding == "*":
            star = q > 0
    return bool(star)


class Scrape:
    """One collection of the registry; each encoding's body is rendered once, for every
    request that shares the collection and asks for that encoding."""

    def __init__(self, registry: CollectorRegistry, duration: ScrapeDurations) -> None:
        started = time.perf_counter()
        self.families: list[Metric] = list(registry.collect())
        self.collect_seconds = time.perf_counter() - started
        self.duration = duration
        self._bodies: dict[tuple[str, bool], Body] = {}
        self._lock = threading.Lock()

    def rendered(self, accept: str, accept_encoding: str) -> bool:
        return self._key(accept, accept_encoding) in self._bodies

    def _key(self, accept: str, accept_encoding: str) -> tuple[str, bool]:
        content_type = choose_encoder(accept)[1]  # names the format, version and escaping
        return content_type, gzip_accepted(accept_encoding)

    def body(self, accept: str, accept_encoding: str) -> Body:
        key = self._key(accept, accept_encoding)
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


class Idle(Protocol):
    """What SingleFlight does when a round of collections ends (memory.Trimmer)."""

    def due(self) -> bool: ...

    def __call__(self) -> None: ...


class SingleFlight:
    """Concurrent scrapes share one collection instead of each collecting in full.

    A request never gets a collection that began before it arrived: a scrape must show the
    state at or after its request, and a collection already running may have read some
    maps before it. Requests arriving while one runs wait for the next, and all of them
    share it: one collection a round, however many scrapers, at the cost of waiting for at
    most one collection in progress. Collections run one at a time, so a scraper's
    successive scrapes never go backwards.

    A collection runs in a thread, so the event loop keeps answering meanwhile, unless the
    one before took under INLINE_SECONDS: then the hop to a thread and back (a wakeup of
    each, ~0.1-0.3 ms on a busy VM) would cost more than the collection, which runs on the
    loop (in the request itself when no other is in progress or waiting). A map that grew
    meanwhile costs the loop one slow collection, then threads again.
    """

    def __init__(self, collect: Callable[[], Scrape], idle: Idle) -> None:
        self._collect = collect
        self._idle = idle  # run when a round of collections ends, in a thread if due
        self._next: asyncio.Future[Scrape] | None = None  # what requests arriving now get
        self._runner: asyncio.Task[None] | None = None
        self._last_seconds = math.inf  # how long the last collection took

    async def get(self) -> Scrape:
        if self._runner is None and self._last_seconds < INLINE_SECONDS and not self._idle.due():
            # Nothing collecting or waiting, and a collection this cheap: it runs right here,
            # as the runner would run it, without a task and a future to hand it over (two
            # turns of the event loop, ~10% of a small scrape).
            started = time.perf_counter()
            try:
                return self._collect()
            finally:
                self._last_seconds = time.perf_counter() - started
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
                started = time.perf_counter()
                try:
                    if self._last_seconds < INLINE_SECONDS:
                        scrape = self._collect()
                    else:
                        scrape = await asyncio.to_thread(self._collect)
                    future.set_result(scrape)
                except Exception as err:  # noqa: BLE001 - every waiter gets it: a 500 each
                    future.set_exception(err)
                self._last_seconds = time.perf_counter() - started
                if self._next is None and self._idle.due():
                    await asyncio.to_thread(self._idle)  # requests arriving meanwhile: next
        finally:
            self._runner = None


# The HTTP versions this server speaks.
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
        self.scrape_duration = ScrapeDurations()
        registry.register(self.scrape_duration)
        self.scrapes = SingleFlight(
            lambda: Scrape(self.registry, self.scrape_duration), memory.Trimmer()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["http_version"] not in HTTP_VERSIONS:
            # llhttp parses HTTP/2.0 (and h11 any HTTP/d.d) into a request like any other.
            await _respond(send, 505, b"HTTP version not supported\n", "text/plain")
            return
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["http_version"] == "1.1" and "host" not in headers:
            # RFC 9112 3.2: a server MUST answer 400 (h11 did; llhttp does not check).
            await _respond(send, 400, b"missing Host header\n", "text/plain")
            return
        if path in (self.telemetry_path, "/", *OPEN_PATHS) and method not in ("GET", "HEAD"):
            await _respond(
                send, 405, b"method not allowed\n", "text/plain", [("allow", "GET, HEAD")]
            )
        elif path == self.telemetry_path:
            scrape = await self.scrapes.get()
            accept, encoding = headers.get("accept", ""), headers.get("accept-encoding", "")
            if scrape.rendered(accept, encoding) or scrape.collect_seconds < INLINE_SECONDS:
                body, content_type, extra = scrape.body(accept, encoding)
            else:  # rendering takes about as long as collecting
                body, content_type, extra = await asyncio.to_thread(scrape.body, accept, encoding)
            await _respond(send, 200, body, content_type, extra, head=method == "HEAD")
        elif path in HEALTH_PATHS:  # serving: healthy (Prometheus' /-/healthy)
            await _respond(send, 200, b"ok\n", "text/plain", head=method == "HEAD")
        elif path == READY_PATH:
            why = unready(self.exporter.started, self.exporter.status)
            if why:
                body = "".join(f"not ready: {reason}\n" for reason in why).encode()
                await _respond(send, 503, body, "text/plain", head=method == "HEAD")
            else:
                await _respond(send, 200, b"ready\n", "text/plain", head=method == "HEAD")
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


_dates: tuple[int, bytes] = (0, b"")


def _date() -> bytes:
    """The Date header's value, formatted once a second."""
    global _dates
    now = int(time.time())
    if _dates[0] != now:
        _dates = now, formatdate(now, usegmt=True).encode()
    return _dates[1]


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
        (b"date", _date()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in extra or []]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if head:
        body = b""
    sent = 0
    while len(body) - sent > BODY_SLICE:
        chunk = body[sent : sent + BODY_SLICE]
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        sent += BODY_SLICE
    await send({"type": "http.response.body", "body": body[sent:] if sent else body})


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
            verdict = self.auth.known(authorization)
            if verdict is None:  # a bcrypt check: dropped if the client leaves meanwhile
                verdict = await _unless_gone(self.auth.check(authorization), receive)
                if verdict is None:
                    return  # nobody left to answer
            if verdict is Verdict.BUSY:
                await _respond(
                    send_with_headers,
                    429,
                    b"Too many password checks pending; try again later\n",
                    "text/plain; charset=utf-8",
                    [("retry-after", "1")],
                )
                return
            if verdict is Verdict.FAIL:
                await _respond(
                    send_with_headers,
                    401,
                    b"Unauthorized\n",
                    "text/plain; charset=utf-8",
                    [("www-authenticate", "Basic")],
                )
                return
        await self.app(scope, receive, send_with_headers)


async def _unless_gone(work: Coroutine[Any, Any, T], receive: Receive) -> T | None:
    """`work`'s result, or None (and `work` cancelled) if the client disconnects first.
    Reads the request's body to see the disconnect: no path behind the Guard reads one."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    return task.result() if task.done() and not task.cancelled() else None
