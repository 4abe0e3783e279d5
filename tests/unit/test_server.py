"""exporter.http.app: the ASGI app, driven directly with scope dicts (no socket, no uvicorn)."""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter import memory
from exporter.errors import LoadError
from exporter.http.app import App, SingleFlight
from exporter.metrics import exposition
from exporter.metrics.self_metrics import ExporterCollector

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


def request(
    app: App, method: str, path: str, headers: dict[str, str] | None = None, version: str = "1.1"
) -> Response:
    return asyncio.run(call(app, method, path, headers, version))


async def call(
    app: App,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    version: str = "1.1",
    host: bool = True,
) -> Response:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": version,
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        # As a client sends them: HTTP/1.1 requires Host.
        "headers": [
            (k.lower().encode(), v.encode())
            for k, v in {**({"host": "x"} if host else {}), **(headers or {})}.items()
        ],
    }
    sent: list[MutableMapping[str, Any]] = []
    received = False

    async def receive() -> MutableMapping[str, Any]:
        """The (empty) body, then nothing until the client leaves: it never does here."""
        nonlocal received
        if received:
            await asyncio.Event().wait()
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    assert {b["type"] for b in bodies} == {"http.response.body"}
    assert [b.get("more_body", False) for b in bodies] == [True] * (len(bodies) - 1) + [False]
    header_list = list(start["headers"])
    headers = {k.decode(): v.decode() for k, v in header_list}
    assert len(headers) == len(header_list), "no header twice"
    return Response(start["status"], headers, header_list, b"".join(b["body"] for b in bodies))


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


@pytest.mark.parametrize(
    "accept_encoding, gzipped",
    [
        ("gzip", True),
        ("GZIP;q=0.5", True),
        ("deflate, *", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),  # gzip's own entry decides
        ("identity, *;q=0, gzip;q=1", True),
        ("deflate, br", False),
        ("gzip;q=nonsense", False),
        ("", False),
    ],
)
def test_gzip_only_when_accepted_with_a_positive_weight(
    app: App, accept_encoding: str, gzipped: bool
) -> None:
    r = request(app, "GET", "/metrics", {"Accept-Encoding": accept_encoding})
    assert (r.headers.get("content-encoding") == "gzip") is gzipped
    assert (r.body[:2] == b"\x1f\x8b") is gzipped


def test_a_large_body_goes_out_in_slices(monkeypatch: pytest.MonkeyPatch, app: App) -> None:
    """So that uvicorn waits for the client between slices, not after buffering it all."""
    monkeypatch.setattr("exporter.http.app.BODY_SLICE", 100)
    sent: list[bytes] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def keep(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                sent.append(message["body"])
            await send(message)

        await app(scope, receive, keep)

    r = asyncio.run(call(recording, "GET", "/metrics"))  # type: ignore[arg-type]
    assert len(sent) == -(-len(r.body) // 100) and all(len(s) == 100 for s in sent[:-1])
    assert b"".join(sent) == r.body and r.headers["content-length"] == str(len(r.body))


class Numbered:
    """A collector whose collections are numbered, and can be held open."""

    def __init__(self) -> None:
        self.collections = 0
        self.collecting = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail = False

    def collect(self) -> Iterator[Metric]:
        self.collections += 1
        number = self.collections
        self.collecting.set()
        assert self.release.wait(10)
        if self.fail:
            raise RuntimeError("collection failed")
        family = GaugeMetricFamily("collection", "Which collection the body shows.")
        family.add_metric([], number)
        yield family


def numbered_app() -> tuple[App, Numbered]:
    registry = CollectorRegistry(auto_describe=False)
    numbered = Numbered()
    registry.register(numbered)
    return App(registry, ExporterCollector(), "/metrics"), numbered


def collection(response: Response, gzipped: bool = False) -> float:
    body = gzip.decompress(response.body) if gzipped else response.body
    if response.headers["content-type"].startswith("application/openmetrics-text"):
        families = openmetrics_families(body.decode())
    else:
        families = text_string_to_metric_families(body.decode())
    return next(f for f in families if f.name == "collection").samples[0].value


async def during_a_collection(
    app: App, numbered: Numbered, later: list[dict[str, str]]
) -> tuple[Response, list[Response]]:
    """One request, and `later` ones arriving while its collection runs."""
    numbered.release.clear()
    first = asyncio.create_task(call(app, "GET", "/metrics"))
    assert await asyncio.to_thread(numbered.collecting.wait, 10)
    waiting = [asyncio.create_task(call(app, "GET", "/metrics", h)) for h in later]
    await asyncio.sleep(0.1)  # every one of them is waiting now
    numbered.release.set()
    return await first, await asyncio.gather(*waiting)


def test_scrapes_arriving_during_a_collection_share_the_next_one() -> None:
    app, numbered = numbered_app()
    first, later = asyncio.run(during_a_collection(app, numbered, [{}] * 20))
    # None of them is given the collection that began before it arrived.
    assert collection(first) == 1
    assert [collection(r) for r in later] == [2] * 20
    assert numbered.collections == 2
    # One at a time, a scrape never waits for anything: each collects anew.
    assert [collection(request(app, "GET", "/metrics")) for _ in range(3)] == [3, 4, 5]


def test_each_encoding_of_a_shared_collection_is_rendered_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renders: list[str] = []
    real = exposition.render

    def counted(families: list[Metric], accept: str) -> tuple[bytes, str]:
        renders.append(accept)
        return real(families, accept)

    monkeypatch.setattr(exposition, "render", counted)
    app, numbered = numbered_app()
    gzipped = {"Accept-Encoding": "gzip"}
    openmetrics = {"Accept": OPENMETRICS_ACCEPT}
    later = [{}, gzipped, openmetrics, {**openmetrics, **gzipped}] * 5
    _, responses = asyncio.run(during_a_collection(app, numbered, later))
    assert numbered.collections == 2
    # The first request's, then text and OM once each (in whichever order threads take them).
    assert sorted(renders) == ["", "", OPENMETRICS_ACCEPT]
    for headers, response in zip(later, responses, strict=True):
        assert response.status == 200
        assert collection(response, gzipped="Accept-Encoding" in headers) == 2
        assert response.headers.get("content-encoding") == headers.get("Accept-Encoding")
        assert response.headers["content-type"].startswith(
            "application/openmetrics-text" if "Accept" in headers else "text/plain"
        )


def test_a_failed_collection_fails_the_scrapes_sharing_it_and_the_next_collects_anew() -> None:
    app, numbered = numbered_app()
    numbered.fail = True

    async def scrapes() -> list[Response | BaseException]:
        tasks = [asyncio.create_task(call(app, "GET", "/metrics")) for _ in range(5)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scrapes())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert numbered.collections == 1
    numbered.fail = False
    assert collection(request(app, "GET", "/metrics")) == 2


def test_header_names_are_case_insensitive(app: App) -> None:
    r = request(app, "GET", "/metrics", {"ACCEPT-ENCODING": "gzip"})
    assert r.headers["content-encoding"] == "gzip"


def test_head_has_the_headers_of_get_and_no_body(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every scrape then takes 0 s: the scrape histogram's text keeps its length between calls.
    monkeypatch.setattr("exporter.http.app.time.perf_counter", lambda: 1.0)
    head = request(app, "HEAD", "/metrics")
    get = request(app, "GET", "/metrics")
    assert head.status == 200
    assert head.body == b""
    # The Date header may tick between the two requests.
    assert [h for h in head.header_list if h[0] != b"date"] == [
        h for h in get.header_list if h[0] != b"date"
    ]
    assert "date" in head.headers and "date" in get.headers
    assert head.headers["content-type"] == TEXT
    assert head.headers["content-length"] == str(len(get.body))


def test_head_with_gzip(app: App) -> None:
    head = request(app, "HEAD", "/metrics", {"Accept-Encoding": "gzip"})
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/metrics", "/", "/healthz", "/-/healthy", "/-/ready"])
def test_other_methods_are_not_allowed(app: App, method: str, path: str) -> None:
    r = request(app, method, path)
    assert r.status == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert r.body == b"method not allowed\n"


@pytest.mark.parametrize("version", ["9.9", "2.0", "0.9"])
def test_other_http_versions_are_505(app: App, version: str) -> None:
    # llhttp parses "GET /metrics HTTP/2.0" into a request like any other (h11 any HTTP/d.d).
    r = request(app, "GET", "/metrics", version=version)
    assert (r.status, r.body) == (505, b"HTTP version not supported\n")


def test_http_1_1_without_host_is_400(app: App) -> None:
    r = asyncio.run(call(app, "GET", "/healthz", host=False))
    assert (r.status, r.body) == (400, b"missing Host header\n")
    assert request(app, "GET", "/healthz", version="1.0").status == 200  # 1.0 needs none


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_http_1_is_served(app: App, version: str) -> None:
    assert request(app, "GET", "/healthz", version=version).status == 200


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


def test_healthy_while_serving_and_healthz_is_its_alias(app: App) -> None:
    for path in ("/-/healthy", "/healthz"):
        assert (request(app, "GET", path).status, request(app, "GET", path).body) == (200, b"ok\n")


def test_ready_once_started_with_every_program_that_can_run_attached() -> None:
    app, exporter = make_app()
    exporter.started = False
    r = request(app, "GET", "/-/ready")
    assert (r.status, r.body) == (503, b"not ready: starting\n")
    exporter.started = True
    # A program whose probe this kernel lacks is skipped: it does not count against readiness.
    exporter.set_programs([], [LoadError("hw", "no such probe", unavailable=True)])
    assert (request(app, "GET", "/-/ready").status, request(app, "GET", "/-/ready").body) == (
        200,
        b"ready\n",
    )
    exporter.set_programs([], [LoadError("bio", "compile: error")])
    r = request(app, "GET", "/-/ready")
    assert (r.status, r.body) == (503, b"not ready: bio: compile: error\n")
    assert request(app, "HEAD", "/-/ready").body == b""
    assert request(app, "GET", "/-/healthy").status == 200  # healthy all the same


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


def test_a_round_of_collections_ends_with_the_idle_step_and_requests_during_it_are_served() -> None:
    collected: list[int] = []
    idle_started, idle_release = threading.Event(), threading.Event()

    class Idle:
        def due(self) -> bool:
            return True

        def __call__(self) -> None:
            idle_started.set()
            assert idle_release.wait(10)

    def collect() -> int:
        collected.append(len(collected) + 1)
        return collected[-1]

    async def scrapes() -> tuple[int, int]:
        flight = SingleFlight(collect, Idle())  # type: ignore[arg-type]
        first = await flight.get()
        assert await asyncio.to_thread(idle_started.wait, 10)
        during = asyncio.create_task(flight.get())  # arrives while the idle step runs
        await asyncio.sleep(0.05)
        idle_release.set()
        return first, await asyncio.wait_for(during, 10)

    assert asyncio.run(scrapes()) == (1, 2)


def test_the_trimmer_releases_memory_at_most_once_a_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[float] = []
    now = [100.0]
    monkeypatch.setattr(memory, "release", lambda: released.append(now[0]))
    monkeypatch.setattr(memory.time, "monotonic", lambda: now[0])
    trim = memory.Trimmer(every=60)
    for t in (100, 110, 159, 160, 170, 221):
        now[0] = t
        trim()
    assert released == [100, 160, 221]


def test_every_response_says_its_date(app: App) -> None:
    # uvicorn's own Date header is off (it needs a timer waking the idle daemon every second).
    for path in ("/metrics", "/healthz", "/", "/nowhere"):
        date = request(app, "GET", path).headers["date"]
        assert parsedate_to_datetime(date).tzinfo is not None and date.endswith(" GMT")
