"""exporter.server: the ASGI app, driven directly with scope dicts (no socket, no uvicorn)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter.errors import LoadError
from exporter.metrics.self_metrics import ExporterCollector
from exporter.server import App

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"


class Opens:
    """A small custom collector: one counter with a known value."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("bcc_opens", "Opens by comm.", labels=["comm"])
        family.add_metric(["cat"], 23)
        yield family


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    header_list: list[tuple[bytes, bytes]]
    body: bytes


def make_app(telemetry_path: str = "/metrics") -> tuple[App, ExporterCollector]:
    registry = CollectorRegistry()
    registry.register(Opens())
    exporter = ExporterCollector()
    registry.register(exporter)
    return App(registry, exporter, telemetry_path), exporter


def request(app: App, method: str, path: str, headers: dict[str, str] | None = None) -> Response:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    assert [b["type"] for b in bodies] == ["http.response.body"]
    assert not bodies[0].get("more_body", False)
    header_list = list(start["headers"])
    headers = {k.decode(): v.decode() for k, v in header_list}
    assert len(headers) == len(header_list), "no header twice"
    return Response(start["status"], headers, header_list, bodies[0]["body"])


@pytest.fixture
def app() -> App:
    return make_app()[0]


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


# --- /metrics ---------------------------------------------------------------------------------


def test_metrics_is_prometheus_text(app: App) -> None:
    r = request(app, "GET", "/metrics")
    assert r.status == 200
    assert r.headers["content-type"] == TEXT
    assert r.headers["content-length"] == str(len(r.body))
    assert "content-encoding" not in r.headers
    got = samples(r.body)
    assert got[("bcc_opens_total", frozenset({("comm", "cat")}))] == 23
    assert got[("bcc_exporter_build_info", frozenset({("version", "0.1.0")}))] == 1


def test_metrics_families_are_typed(app: App) -> None:
    body = request(app, "GET", "/metrics").body.decode()
    types = {f.name: f.type for f in text_string_to_metric_families(body)}
    assert types["bcc_opens"] == "counter"
    assert types["bcc_exporter_build_info"] == "gauge"
    assert types["bcc_exporter_scrape_duration_seconds"] == "histogram"
    assert types["bcc_exporter_enabled_programs"] == "gauge"


def test_scrape_duration_counts_scrapes(app: App) -> None:
    request(app, "GET", "/metrics")
    request(app, "GET", "/metrics")
    got = samples(request(app, "GET", "/metrics").body)
    # Observed after rendering: the third body shows the first two scrapes.
    assert got[("bcc_exporter_scrape_duration_seconds_count", frozenset())] == 2


def test_openmetrics_when_asked(app: App) -> None:
    r = request(app, "GET", "/metrics", {"Accept": OPENMETRICS_ACCEPT})
    assert r.status == 200
    media, *params = [p.strip() for p in r.headers["content-type"].split(";")]
    assert media == "application/openmetrics-text"
    assert {"version=1.0.0", "charset=utf-8"} <= set(params)
    assert r.body.endswith(b"# EOF\n")
    assert r.headers["content-length"] == str(len(r.body))
    families = {f.name: f for f in openmetrics_families(r.body.decode())}
    assert families["bcc_opens"].samples[0].value == 23


def test_prometheus_scrape_accept_header_gets_openmetrics(app: App) -> None:
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    r = request(app, "GET", "/metrics", {"Accept": accept})
    assert r.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert r.body.endswith(b"# EOF\n")


def test_gzip_when_accepted(app: App) -> None:
    r = request(app, "GET", "/metrics", {"Accept-Encoding": "gzip, deflate"})
    assert r.status == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["content-type"] == TEXT
    assert r.headers["content-length"] == str(len(r.body))
    assert r.body[:2] == b"\x1f\x8b"
    got = samples(gzip.decompress(r.body))
    assert got[("bcc_opens_total", frozenset({("comm", "cat")}))] == 23


def test_header_names_are_case_insensitive(app: App) -> None:
    r = request(app, "GET", "/metrics", {"ACCEPT-ENCODING": "gzip"})
    assert r.headers["content-encoding"] == "gzip"


def test_head_has_the_headers_of_get_and_no_body(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every scrape then takes 0 s: the scrape histogram's text keeps its length between calls.
    monkeypatch.setattr("exporter.server.time.perf_counter", lambda: 1.0)
    head = request(app, "HEAD", "/metrics")
    get = request(app, "GET", "/metrics")
    assert head.status == 200
    assert head.body == b""
    assert head.header_list == get.header_list
    assert head.headers["content-type"] == TEXT
    assert head.headers["content-length"] == str(len(get.body))


def test_head_with_gzip(app: App) -> None:
    head = request(app, "HEAD", "/metrics", {"Accept-Encoding": "gzip"})
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/metrics", "/", "/healthz"])
def test_other_methods_are_not_allowed(app: App, method: str, path: str) -> None:
    r = request(app, method, path)
    assert r.status == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert r.body == b"method not allowed\n"


@pytest.mark.parametrize("path", ["/nope", "/metrics/", "/metricsx", "/healthz/extra"])
def test_unknown_path_is_404(app: App, path: str) -> None:
    r = request(app, "GET", path)
    assert r.status == 404
    assert r.body == b"not found\n"
    assert r.headers["content-length"] == "10"


def test_healthz(app: App) -> None:
    r = request(app, "GET", "/healthz")
    assert (r.status, r.body) == (200, b"ok\n")
    assert r.headers["content-type"].startswith("text/plain")
    head = request(app, "HEAD", "/healthz")
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "3")


def test_landing_page_links_to_the_metrics(app: App) -> None:
    r = request(app, "GET", "/")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-length"] == str(len(r.body))
    page = r.body.decode()
    assert page.startswith("<!doctype html>")
    assert "<a href='/metrics'>Metrics</a>" in page


def test_landing_page_lists_failed_programs_escaped() -> None:
    app, exporter = make_app()
    exporter.set_programs([], [LoadError("bio", "compile: error: <stdin>:3: 'x' undeclared")])
    page = request(app, "GET", "/").body.decode()
    assert (
        "<tr><td>bio</td><td>failed</td>"
        "<td>compile: error: &lt;stdin&gt;:3: &#x27;x&#x27; undeclared</td></tr>"
    ) in page
    got = samples(request(app, "GET", "/metrics").body)
    assert got[("bcc_exporter_enabled_programs", frozenset({("program", "bio")}))] == 0


def test_custom_telemetry_path() -> None:
    app, _ = make_app("/probe/bpf")
    r = request(app, "GET", "/probe/bpf")
    assert r.status == 200
    assert r.headers["content-type"] == TEXT
    assert samples(r.body)[("bcc_opens_total", frozenset({("comm", "cat")}))] == 23
    assert request(app, "GET", "/metrics").status == 404
    assert request(app, "POST", "/probe/bpf").status == 405
    assert "<a href='/probe/bpf'>Metrics</a>" in request(app, "GET", "/").body.decode()
    assert request(app, "GET", "/healthz").body == b"ok\n"


def test_telemetry_path_is_escaped_in_the_landing_page() -> None:
    app, _ = make_app("/m'<x>")
    assert "<a href='/m&#x27;&lt;x&gt;'>Metrics</a>" in request(app, "GET", "/").body.decode()


def test_non_http_scopes_are_ignored(app: App) -> None:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "websocket", "path": "/metrics"}, receive, send))
    assert sent == []
