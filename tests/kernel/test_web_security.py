"""--web.config.file on the real daemon: TLS with certificates made here (trustme), client
certificates, basic auth, minimum TLS version, extra headers. Two daemons, started together
and shared by the tests of this file, to keep it fast."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import trustme

from exporter.http.uvicorn_compat import REQUEST_HEAD_SECONDS

from ..conftest import getppid_counter
from .conftest import Daemon

PROGRAM = getppid_counter()
PASSWORD = "correct horse"


@dataclass
class PKI:
    server_ca: trustme.CA
    client_ca: trustme.CA
    client: trustme.LeafCert  # signed by client_ca
    stranger: trustme.LeafCert  # signed by a CA the daemon does not know


class HTTPSDaemon(Daemon):
    """The daemon over HTTPS: `get` (readiness, scrape) trusts `server_ca`, presents the client
    certificate when given one and sends basic auth."""

    def __init__(self, args: list[str], log: Path, client: ssl.SSLContext) -> None:
        self.client = client
        super().__init__(args, log, wait=False)
        self.url = f"https://127.0.0.1:{self.port}"

    def request(
        self,
        path: str,
        password: str | None = PASSWORD,
        context: ssl.SSLContext | None = None,
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=context or self.client, timeout=30
        )
        headers = {}
        if password is not None:
            token = base64.b64encode(f"alice:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response

    def get(self, path: str, headers: dict[str, str] | None = None) -> bytes:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.client, timeout=30)
        token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        conn.request("GET", path, headers={"Authorization": f"Basic {token}", **(headers or {})})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise OSError(f"GET {path}: {response.status}")
        return body


def client_context(pki: PKI, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    pki.server_ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def pki() -> PKI:
    client_ca = trustme.CA()
    return PKI(
        server_ca=trustme.CA(),
        client_ca=client_ca,
        client=client_ca.issue_cert("prometheus@example.com"),
        stranger=trustme.CA().issue_cert("prometheus@example.com"),
    )


@pytest.fixture(scope="module")
def daemons(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, HTTPSDaemon]]:
    """`tls`: TLS without client certificates, basic auth, headers.
    `mtls`: RequireAndVerifyClientCert and min_version TLS13."""
    d = tmp_path_factory.mktemp("web")
    pki.server_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(d / "server.pem")
    )
    pki.client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))
    # Cost 10, as `htpasswd -nBC 10` makes them.
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    (d / "tls.yml").write_text(
        f"""
tls_server_config:
  cert_file: server.pem
  key_file: server.pem
http_server_config:
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  alice: {hashed}
"""
    )
    (d / "mtls.yml").write_text(
        """
tls_server_config:
  cert_file: server.pem
  key_file: server.pem
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: client-ca.pem
  min_version: TLS13
"""
    )
    (d / "program.yaml").write_text(PROGRAM)
    started = {
        name: HTTPSDaemon(
            [f"--config.file={d / 'program.yaml'}", f"--web.config.file={d / name}.yml"],
            d / f"{name}.log",
            client_context(pki, pki.client if name == "mtls" else None),
        )
        for name in ("tls", "mtls")
    }
    try:
        for daemon in started.values():
            daemon.wait_ready()
        yield started
    finally:
        for daemon in started.values():
            daemon.stop()


# --- TLS and basic auth ----------------------------------------------------------------------


def test_scrape_over_tls_verified_against_the_ca(daemons: dict[str, HTTPSDaemon]) -> None:
    tls = daemons["tls"]
    os.getppid()  # an array slot is a series once it counted something
    assert ("bcc_getppid_calls_total", frozenset({("slot", "0")})) in tls.scrape()
    assert "TLS (TLS12 to TLS13" in tls.log()


def test_a_client_not_trusting_the_ca_refuses_the_server(daemons: dict[str, HTTPSDaemon]) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        daemons["tls"].request("/metrics", context=ssl.create_default_context())


def test_wrong_or_missing_password_is_401(daemons: dict[str, HTTPSDaemon]) -> None:
    for password in ("wrong", "", None):
        r = daemons["tls"].request("/metrics", password=password)
        assert r.status == 401
        assert r.getheader("WWW-Authenticate") == "Basic"


def test_right_password_is_200(daemons: dict[str, HTTPSDaemon]) -> None:
    r = daemons["tls"].request("/metrics")
    assert r.status == 200
    assert r.getheader("Content-Type", "").startswith("text/plain")


def test_healthz_needs_no_password(daemons: dict[str, HTTPSDaemon]) -> None:
    """So that Kubernetes probes work; it still needs TLS."""
    assert daemons["tls"].request("/healthz", password=None).status == 200


def test_configured_headers_on_every_response(daemons: dict[str, HTTPSDaemon]) -> None:
    for password in (PASSWORD, None):
        r = daemons["tls"].request("/metrics", password=password)
        assert r.getheader("X-Frame-Options") == "deny"
        assert r.getheader("X-Content-Type-Options") == "nosniff"
        assert r.getheader("Strict-Transport-Security") == "max-age=31536000"


def test_plain_http_to_the_tls_port_gets_no_answer(daemons: dict[str, HTTPSDaemon]) -> None:
    with socket.create_connection(("127.0.0.1", daemons["tls"].port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            reply = s.recv(4096)
        except ConnectionResetError:
            reply = b""
    assert reply == b""  # the TLS layer drops the connection: no HTTP at all


def test_tls12_is_accepted_by_default(daemons: dict[str, HTTPSDaemon], pki: PKI) -> None:
    ctx = client_context(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    assert daemons["tls"].request("/healthz", context=ctx).status == 200


# --- client certificates and min_version -------------------------------------------------------


def refused(daemon: HTTPSDaemon, context: ssl.SSLContext) -> None:
    """The server ends the connection without an HTTP answer. Python's asyncio (3.11) closes
    a failed handshake without sending the TLS alert (CPython gh-98078), so the client sees
    EOF or a reset rather than "certificate required": only the refusal itself is asserted."""
    with pytest.raises((ssl.SSLError, ConnectionError)) as err:
        daemon.request("/healthz", context=context)
    # Not the client refusing the server: that would be a test bug.
    assert not isinstance(err.value, ssl.SSLCertVerificationError)


def test_client_certificate_from_the_client_ca_is_let_in(
    daemons: dict[str, HTTPSDaemon], pki: PKI
) -> None:
    r = daemons["mtls"].request("/metrics", context=client_context(pki, pki.client))
    assert r.status == 200


def test_no_client_certificate_is_refused(daemons: dict[str, HTTPSDaemon], pki: PKI) -> None:
    refused(daemons["mtls"], client_context(pki))


def test_client_certificate_of_another_ca_is_refused(
    daemons: dict[str, HTTPSDaemon], pki: PKI
) -> None:
    refused(daemons["mtls"], client_context(pki, pki.stranger))


def test_min_version_tls13_refuses_a_tls12_client(
    daemons: dict[str, HTTPSDaemon], pki: PKI
) -> None:
    ctx = client_context(pki, pki.client)  # the certificate that is let in over TLS 1.3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    refused(daemons["mtls"], ctx)


# --- time limits under TLS ---------------------------------------------------------------------


def lifetime(sock: socket.socket, began: float, limit: float) -> float:
    """Seconds from `began` until the server ends the connection (or `limit`)."""
    sock.settimeout(0.2)
    while time.monotonic() - began < limit:
        try:
            if not sock.recv(4096):
                break
        except TimeoutError:
            continue
        except OSError:  # reset, or a TLS alert
            break
    return time.monotonic() - began


def test_a_silent_connection_lives_no_longer_than_the_head_deadline(
    daemons: dict[str, HTTPSDaemon],
) -> None:
    """One that never starts the handshake: asyncio alone gives it 60 s, which made fd
    exhaustion 12 times cheaper than over plain HTTP."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", daemons["tls"].port), timeout=10) as s:
        seconds = lifetime(s, began, 30)
    # Closed by the head deadline, not asyncio's 60 s; a loaded machine may run it late.
    assert REQUEST_HEAD_SECONDS - 0.5 <= seconds < 2 * REQUEST_HEAD_SECONDS, seconds


def test_the_handshake_counts_within_the_head_deadline(
    daemons: dict[str, HTTPSDaemon], pki: PKI
) -> None:
    """A handshake, then nothing: closed at the head deadline counted from the connect,
    not from the end of the handshake."""
    began = time.monotonic()
    raw = socket.create_connection(("127.0.0.1", daemons["tls"].port), timeout=10)
    time.sleep(REQUEST_HEAD_SECONDS / 2)  # a slow start of the handshake
    with client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as s:
        shaken = time.monotonic()
        seconds = lifetime(s, began, 30)
    # Counted from the connect: closed no sooner than the deadline after it, and sooner than
    # a whole deadline after the handshake, as counting from there would close it.
    assert seconds >= REQUEST_HEAD_SECONDS - 0.5, seconds
    assert began + seconds - shaken < REQUEST_HEAD_SECONDS, (seconds, shaken - began)
