"""HTTP abuse against a running daemon: oversized headers, slow clients, garbage, unknown paths
and methods. Each gets a 4xx or a closed connection, never a crash, and /metrics still scrapes.

uvicorn's httptools protocol parses (llhttp); exporter.http.uvicorn_compat adds what it lacks,
each bound tested here: a 16 KiB bound on a request head (answered 400), a deadline for each
request head, a deadline for a stalled write, a cap on connections, accept errors logged at
most once a second, and no traceback when uvicorn has answered a malformed body itself.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from exporter.http.uvicorn_compat import MAX_HEAD_BYTES, REQUEST_HEAD_SECONDS

from ..conftest import Daemon, getppid_counter

pytestmark = pytest.mark.kernel  # one real daemon, shared by the module

PROGRAM = getppid_counter("abused", "abused_calls_total", namespace="fault")


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the whole module: every test abuses the same one, as an attacker would."""
    tmp = tmp_path_factory.mktemp("abuse")
    config = tmp / "abused.yaml"
    config.write_text(PROGRAM)
    d = Daemon([f"--config.file={config}"], tmp / "daemon.log")
    try:
        yield d
        # After all of it: alive, scraping, and nothing in its log that looks like a crash.
        assert d.proc.poll() is None, d.log()
        assert b"fault_abused_calls_total" in d.get("/metrics")
        log = d.log()
        assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    finally:
        d.stop()


def raw(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes, return all the server answered before closing (b"" when it just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close while we still send: that is an answer too
        except OSError as err:
            if err.errno != errno.ENOTCONN:  # reset before our shutdown: closed, too
                raise
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                answer += chunk
    return answer


def client_error_or_close(answer: bytes) -> bool:
    """A 4xx (505 for an HTTP version it does not speak), or a connection closed without a
    word. (An HTTP/2 preface parses as a request for `*` with method PRI: a 404 is a fine
    answer to it.)"""
    if not answer:
        return True
    line = answer.split(b"\r\n", 1)[0].split()
    return line[0] == b"HTTP/1.1" and (400 <= int(line[1]) < 500 or int(line[1]) == 505)


def request(
    port: int, method: str, path: str, body: bytes | None = None
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.mark.parametrize(
    "name, payload",
    [
        ("100 KB header", b"X-Big: " + b"a" * 100_000 + b"\r\n"),
        ("1 MB header", b"X-Big: " + b"a" * 1_000_000 + b"\r\n"),
        ("10 000 headers", b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))),
        ("header without colon", b"this is no header\r\n"),
        ("NUL in header", b"X-Nul: a\x00b\r\n"),
    ],
)
def test_bad_headers_get_4xx_or_close(exporter: Daemon, name: str, payload: bytes) -> None:
    answer = raw(exporter.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + payload + b"\r\n")
    assert client_error_or_close(answer), f"{name}: {answer[:200]!r}"


def test_a_head_over_the_bound_is_400_and_one_under_it_is_served(exporter: Daemon) -> None:
    line = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
    # Counted: the request target, header names and values ("/metrics", "Host", "x", "X-Big").
    room = MAX_HEAD_BYTES - len(b"/metrics" + b"Host" + b"x" + b"X-Big")
    under = raw(exporter.port, line + b"X-Big: " + b"a" * room + b"\r\n\r\n")
    assert under.startswith(b"HTTP/1.1 200 ") and b"fault_abused_calls_total" in under
    over = raw(exporter.port, line + b"X-Big: " + b"a" * (room + 1) + b"\r\n\r\n")
    assert over.startswith(b"HTTP/1.1 400 "), over[:200]


def test_a_client_that_half_closes_after_its_request_gets_the_answer(exporter: Daemon) -> None:
    """shutdown(SHUT_WR) after the request, as `nc -N` does: the answer still comes whole."""
    answer = raw(exporter.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    length = next(
        int(h.split(b":")[1])
        for h in head.split(b"\r\n")
        if h.lower().startswith(b"content-length")
    )
    assert len(body) == length and b"fault_abused_calls_total" in body


@pytest.mark.parametrize(
    "name, data",
    [
        ("100 KB request line", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("binary garbage", bytes(range(256)) * 4 + b"\r\n\r\n"),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("bad method", b"G(T /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("bad version", b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("no host", b"GET /metrics HTTP/1.1\r\n\r\n"),
        (
            "lying content-length",
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\nab",
        ),
        (
            "bad chunking",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ),
    ],
)
def test_malformed_requests_get_4xx_or_close(exporter: Daemon, name: str, data: bytes) -> None:
    answer = raw(exporter.port, data)
    assert client_error_or_close(answer), f"{name}: {answer[:200]!r}"


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/metrics/",
        "/metricsx",
        "//metrics",
        "/metrics%00",
        "/..%2f..%2fetc/passwd",
        "/" + "a" * 8000,
        "/%ff%fe",
        "/%C3%A9",
    ],
)
def test_unknown_paths_are_404(exporter: Daemon, path: str) -> None:
    assert request(exporter.port, "GET", path).status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_other_methods_on_metrics_are_405(exporter: Daemon, method: str) -> None:
    response = request(exporter.port, method, "/metrics", body=b"x" * 10_000)
    assert response.status == 405
    assert response.getheader("allow") == "GET, HEAD"


def test_slow_clients_do_not_block_a_scrape(exporter: Daemon) -> None:
    """20 slowloris connections trickle their headers a byte at a time (and a few send nothing)
    while a normal scrape comes and goes as fast as without them."""
    began = time.perf_counter()
    exporter.get("/metrics")
    baseline = time.perf_counter() - began

    partial = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    sockets = [socket.create_connection(("127.0.0.1", exporter.port)) for _ in range(20)]
    stop = threading.Event()

    def trickle() -> None:
        for i in range(len(partial)):
            for s in sockets[:15]:  # the last 5 stay silent
                with contextlib.suppress(OSError):
                    s.send(partial[i : i + 1])
            if stop.wait(0.05):
                return

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        time.sleep(0.5)  # every slow connection is established and mid-request
        timings = []
        for _ in range(5):
            began = time.perf_counter()
            assert b"fault_abused_calls_total" in exporter.get("/metrics")
            timings.append(time.perf_counter() - began)
        assert trickler.is_alive(), "the slow clients were still sending during the scrapes"
    finally:
        stop.set()
        trickler.join()
        for s in sockets:
            s.close()
    assert min(timings) < max(1.0, 10 * baseline), (baseline, timings)


def test_many_concurrent_connections_then_recovery(exporter: Daemon) -> None:
    """200 connections at once, each a complete request, some never reading the answer."""
    sockets = []
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", exporter.port), timeout=10)
        path = b"/metrics" if i % 2 else b"/healthz"
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        sockets.append(s)
    for s in sockets[::3]:
        assert s.recv(12).startswith(b"HTTP/1.1 200")
    for s in sockets:
        s.close()
    assert request(exporter.port, "GET", "/metrics").status == 200


def test_idle_connections_are_closed(exporter: Daemon) -> None:
    """uvicorn alone never times out a connection before its first complete request: ~1 000
    silent or trickling ones would exhaust the fds under systemd's default soft limit."""
    began = time.monotonic()  # before the connects: the server's deadline counts from after
    silent = socket.create_connection(("127.0.0.1", exporter.port))
    slow = socket.create_connection(("127.0.0.1", exporter.port))
    kept = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=10)
    try:
        deadline = began + REQUEST_HEAD_SECONDS + 5
        closed = {"silent": False, "slow": False}
        for s in (silent, slow):
            s.settimeout(0.5)
        while time.monotonic() < deadline and not all(closed.values()):
            with contextlib.suppress(OSError):
                slow.send(b"G")  # a byte now and then: a header timeout must not reset
            for name, s in (("silent", silent), ("slow", slow)):
                if closed[name]:
                    continue
                try:
                    s.recv(1024)  # b"" (closed) or an answer (a 408): the server gave up on it
                    closed[name] = True
                except TimeoutError:
                    pass
                except OSError:
                    closed[name] = True
        assert closed == {"silent": True, "slow": True}
        assert time.monotonic() - began >= REQUEST_HEAD_SECONDS - 0.5
        # A keep-alive connection that keeps asking in time is served all along.
        for _ in range(3):
            kept.request("GET", "/healthz")
            assert kept.getresponse().read() == b"ok\n"
            time.sleep(REQUEST_HEAD_SECONDS / 2)
    finally:
        silent.close()
        slow.close()
        kept.close()


BAD_CHUNKS_ON_405 = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"


def test_malformed_body_logs_no_traceback(daemon, write_config) -> None:
    """uvicorn answers a malformed body with a 400 itself; the app, answering the same request
    without reading its body (405), must not answer it again: h11 would raise, and log
    'Exception in ASGI application' and a traceback for every such request from anyone."""
    d = daemon(f"--config.file={write_config('abused', PROGRAM)}")
    for _ in range(3):
        answer = raw(d.port, BAD_CHUNKS_ON_405)
        assert answer.startswith(b"HTTP/1.1 400 ") or answer.startswith(b"HTTP/1.1 405 ")
    time.sleep(0.5)  # the app's answer would come after uvicorn's 400
    assert d.proc.poll() is None
    assert b"fault_abused_calls_total" in d.get("/metrics")
    log = d.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
