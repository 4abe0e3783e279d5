"""Server stage: an ASGI app under uvicorn serving /metrics, /, and /healthz.

Collection reads BPF maps and decodes keys: it runs in a thread so the event loop keeps
answering other requests (health checks, concurrent scrapes) meanwhile.

With --web.config.file, `Guard` wraps the app (basic auth, extra headers) and uvicorn serves
TLS with the context `exporter.web_config` built.
"""

from __future__ import annotations

import asyncio
import gzip
import html
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder, gzip_accepted

from .metrics.self_metrics import PREFIX, ExporterCollector
from .web_config import OPEN_PATHS, BasicAuth, WebConfig

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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
            "Time to collect and render one /metrics response.",
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if path in (self.telemetry_path, "/", "/healthz") and method not in ("GET", "HEAD"):
            await _respond(
                send, 405, b"method not allowed\n", "text/plain", [("allow", "GET, HEAD")]
            )
        elif path == self.telemetry_path:
            body, content_type, extra = await asyncio.to_thread(
                self.render, headers.get("accept", ""), headers.get("accept-encoding", "")
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

    def render(self, accept: str, accept_encoding: str) -> tuple[bytes, str, list[tuple[str, str]]]:
        started = time.perf_counter()
        encoder, content_type = choose_encoder(accept)
        body = encoder(self.registry)
        extra = []
        if gzip_accepted(accept_encoding):
            body = gzip.compress(body, compresslevel=1)
            extra.append(("content-encoding", "gzip"))
        self.scrape_duration.observe(time.perf_counter() - started)
        return body, content_type, extra

    def landing_page(self) -> bytes:
        rows = []
        for c in self.exporter.collectors:
            probes = ", ".join(sorted({f"{a.function} ← {a.probe}" for a in c.program.attachments}))
            rows.append((c.program.name, "attached", probes))
        rows.extend((e.program, "failed", e.reason) for e in self.exporter.failed)
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


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would kill the
    process before it detaches its programs and exits 0: here a signal only asks it to stop."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


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
