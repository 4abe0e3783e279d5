"""exporter.http.web_config, basic_auth and the app's Guard: the exporter-toolkit web config
file, parsed and checked (errors name the file and the key), basic auth, extra headers. Real TLS
through the daemon is in tests/kernel/test_web_security.py."""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading
from pathlib import Path

import bcrypt
import pytest
import trustme

from exporter import cli
from exporter.errors import ConfigError
from exporter.http import basic_auth
from exporter.http.app import Guard
from exporter.http.basic_auth import BasicAuth, Verdict, parse_basic
from exporter.http.web_config import load

from .test_server import call, make_app, request

# Cost 4, the least bcrypt allows: the tests check logic, not bcrypt's cost.
ALICE_HASH = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(rounds=4)).decode()
BOB_HASH = bcrypt.hashpw(b"builder", bcrypt.gensalt(rounds=5)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """server.crt/server.key/ca.pem (and other.key, a key of another certificate)."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(d / "server.crt"))
    cert.private_key_pem.write_to_path(str(d / "server.key"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    ca.issue_cert("other").private_key_pem.write_to_path(str(d / "other.key"))
    return d


def write(directory: Path, text: str) -> Path:
    path = directory / "web.yml"
    path.write_text(text)
    return path


def error(directory: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load(write(directory, text))
    return str(err.value)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- the file ---------------------------------------------------------------------------------


def test_no_flag_no_config() -> None:
    assert load(None) is None


def test_empty_file_is_plain_http_without_auth(tmp_path: Path) -> None:
    web = load(write(tmp_path, ""))
    assert web is not None
    assert (web.tls, dict(web.users), web.headers) == (None, {}, ())
    assert web.authenticator() is None
    assert web.summary == "plain HTTP"


def test_full_config_relative_paths_from_the_file(pki: Path) -> None:
    web = load(
        write(
            pki,
            f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.pem
  min_version: TLS13
http_server_config:
  http2: false
  headers:
    X-Frame-Options: sameorigin
    X-Content-Type-Options: nosniff
    Content-Security-Policy: ""
basic_auth_users:
  alice: {ALICE_HASH}
  bob: {BOB_HASH}
""",
        )
    )
    assert web is not None and web.tls is not None
    assert web.tls.minimum_version == ssl.TLSVersion.TLSv1_3
    assert web.tls.maximum_version == ssl.TLSVersion.TLSv1_3
    assert web.tls.verify_mode == ssl.CERT_REQUIRED
    assert web.tls.cert_store_stats()["x509_ca"] == 1
    assert dict(web.users) == {"alice": ALICE_HASH, "bob": BOB_HASH}
    # A blank header is not sent ("Unset if blank").
    assert web.headers == (("X-Frame-Options", "sameorigin"), ("X-Content-Type-Options", "nosniff"))
    assert "TLS (TLS13 to TLS13" in web.summary and "basic auth (2 users)" in web.summary


@pytest.mark.parametrize(
    ("client_auth", "mode"),
    [
        ("NoClientCert", ssl.CERT_NONE),
        ("RequestClientCert", ssl.CERT_NONE),
        ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
        ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
    ],
)
def test_client_auth_types(pki: Path, client_auth: str, mode: ssl.VerifyMode) -> None:
    ca = "" if client_auth in ("NoClientCert", "RequestClientCert") else "client_ca_file: ca.pem"
    web = load(
        write(
            pki,
            f"""
tls_server_config:
  cert_file: {pki / "server.crt"}
  key_file: {pki / "server.key"}
  client_auth_type: {client_auth}
  {ca}
""",
        )
    )
    assert web is not None and web.tls is not None
    assert web.tls.verify_mode == mode
    assert web.tls.minimum_version == ssl.TLSVersion.TLSv1_2  # exporter-toolkit's default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_confg: {}", "tls_server_confg: unknown field"),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth: x}",
            "tls_server_config.client_auth: unknown field",
        ),
        ("http_server_config: {header: {}}", "http_server_config.header: unknown field"),
        ("tls_server_config: {key_file: b}", "tls_server_config.cert_file: required"),
        (
            "tls_server_config: {cert_file: a, key_file: b, min_version: TLS14}",
            "tls_server_config.min_version: must be one of TLS10, TLS11, TLS12, TLS13 "
            "(got 'TLS14')",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, "
            "max_version: TLS12}",
            "tls_server_config.min_version: TLS13 is above max_version",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_ca_file: ca.pem}",
            "tls_server_config.client_ca_file: given, but client_auth_type is NoClientCert",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, "
            "client_auth_type: RequireAndVerifyClientCert}",
            "tls_server_config.client_ca_file: required with client_auth_type "
            "RequireAndVerifyClientCert",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, "
            "client_auth_type: RequireAnyClientCert}",
            "tls_server_config.client_auth_type: RequireAnyClientCert (a certificate required "
            "but not verified) cannot be honoured",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [X]}",
            "tls_server_config.cipher_suites: an exporter-toolkit option bcc_exporter does not "
            "support; OpenSSL's defaults apply",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_allowed_sans: [x]}",
            "tls_server_config.client_allowed_sans: an exporter-toolkit option bcc_exporter",
        ),
        (
            "rate_limit: {burst: 1}",
            "rate_limit: an exporter-toolkit option bcc_exporter does not support",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, cert: x}",
            "tls_server_config.cert: an exporter-toolkit option bcc_exporter does not support; "
            "use cert_file",
        ),
        ("basic_auth_users: {alice: plaintext}", "basic_auth_users.alice: not a bcrypt hash"),
        ("basic_auth_users: [alice]", "basic_auth_users: must be a mapping (got list)"),
        (
            "http_server_config: {headers: {Content-Type: text/html}}",
            "http_server_config.headers: header 'Content-Type' cannot be configured "
            "(allowed, exactly so spelt: Strict-Transport-Security, X-Content-Type-Options, "
            "X-Frame-Options, X-XSS-Protection, Content-Security-Policy)",
        ),
        (
            "http_server_config: {headers: {x-frame-options: deny}}",
            "header 'x-frame-options' cannot be configured",
        ),
        (
            "http_server_config: {headers: {X-Frame-Options: allow}}",
            "http_server_config.headers: header 'X-Frame-Options' must be one of deny, "
            "sameorigin (got 'allow')",
        ),
        (
            'http_server_config: {headers: {Content-Security-Policy: "a\\r\\nSet-Cookie: x"}}',
            "http_server_config.headers: header 'Content-Security-Policy': only printable ASCII",
        ),
        ("- a list", "must be a mapping (got list)"),
        ("tls_server_config: [", "invalid YAML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    got = error(tmp_path, text)
    assert got.startswith(f"{tmp_path / 'web.yml'}: ")
    assert message in got
    assert "\n" not in got


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yml: cannot read config: No such file"):
        load(tmp_path / "nope.yml")


def test_unreadable_certificate_is_a_config_error(pki: Path) -> None:
    got = error(pki, "tls_server_config: {cert_file: missing.crt, key_file: server.key}")
    assert f"tls_server_config.cert_file: cannot read {pki / 'missing.crt'}: No such file" in got


def test_key_of_another_certificate_is_a_config_error(pki: Path) -> None:
    got = error(pki, "tls_server_config: {cert_file: server.crt, key_file: other.key}")
    assert f"cannot use cert_file {pki / 'server.crt'} with key_file {pki / 'other.key'}" in got
    assert "key values mismatch" in got


def test_client_ca_file_without_certificates(pki: Path) -> None:
    (pki / "empty.pem").write_text("")
    got = error(
        pki,
        "tls_server_config: {cert_file: server.crt, key_file: server.key, "
        "client_auth_type: VerifyClientCertIfGiven, client_ca_file: empty.pem}",
    )
    assert f"tls_server_config.client_ca_file: cannot use {pki / 'empty.pem'}: " in got


def test_cli_exits_2_on_a_bad_web_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before binding the port or loading any program."""
    path = write(tmp_path, "basic_auth_users: {}\nbasic_auth: {alice: x}\n")
    assert cli.main(["--web.config.file", str(path), "--web.listen-address", "256.0.0.1:1"]) == 2
    assert capsys.readouterr().err == f"bcc_exporter: {path}: basic_auth: unknown field\n"


# --- basic auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("alice", "wonder:land"), ("alice", b"wonder:land")),
        ("basic " + base64.b64encode(b"alice:").decode(), ("alice", b"")),
        (None, None),
        ("", None),
        ("Bearer abc", None),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic " + base64.b64encode(b"\xff:x").decode(), None),
    ],
)
def test_parse_basic(header: str | None, expected: tuple[str, bytes] | None) -> None:
    assert parse_basic(header) == expected


def test_basic_auth_checks_passwords() -> None:
    auth = BasicAuth({"alice": ALICE_HASH, "bob": BOB_HASH})
    check = lambda header: asyncio.run(auth.check(header))  # noqa: E731
    assert check(basic("alice", "wonderland")) is Verdict.PASS
    assert check(basic("bob", "builder")) is Verdict.PASS
    assert check(basic("alice", "builder")) is Verdict.FAIL
    assert check(basic("carol", "wonderland")) is Verdict.FAIL
    # Past bcrypt's 72 bytes: refused, no error.
    assert check(basic("alice", "x" * 100)) is Verdict.FAIL
    assert check(None) is Verdict.FAIL
    auth.close()


def test_basic_auth_remembers_passes_and_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth({"alice": ALICE_HASH})
    calls: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return checkpw(password, hashed)

    monkeypatch.setattr(basic_auth.bcrypt, "checkpw", counting)

    async def scrapes() -> list[Verdict]:
        return [await auth.check(basic("alice", p)) for p in ["wonderland"] * 3 + ["no"] * 2]

    assert asyncio.run(scrapes()) == [Verdict.PASS] * 3 + [Verdict.FAIL] * 2
    assert calls == [b"wonderland", b"no"]
    auth.close()


def test_unknown_user_costs_a_real_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user enumeration by timing: an unknown user is checked against the costliest hash."""
    auth = BasicAuth({"alice": ALICE_HASH, "bob": BOB_HASH})
    hashes: list[bytes] = []
    checkpw = bcrypt.checkpw

    def recording(password: bytes, hashed: bytes) -> bool:
        hashes.append(hashed)
        return checkpw(password, hashed)

    monkeypatch.setattr(basic_auth.bcrypt, "checkpw", recording)
    # Even bob's own password, for a user who does not exist.
    assert not auth.verify("mallory", b"builder")
    assert hashes == [BOB_HASH.encode()]  # cost 5 > alice's 4


class SlowBcrypt:
    """bcrypt.checkpw that blocks until released, recording what it was asked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[bytes] = []
        self.release = threading.Event()
        checkpw = bcrypt.checkpw

        def slow(password: bytes, hashed: bytes) -> bool:
            self.calls.append(password)
            self.release.wait(10)
            return checkpw(password, hashed)

        monkeypatch.setattr(basic_auth.bcrypt, "checkpw", slow)


async def settle() -> None:
    """Let every ready task run (checks start, threads pick up work)."""
    for _ in range(5):
        await asyncio.sleep(0.01)


def test_beyond_the_pending_bound_the_check_waiting_longest_gives_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bound 3: `a` runs, `b` and `c` wait; `d` arrives: `b` is answered BUSY at once and
    never checked, `d` is checked after `c`."""
    bcrypt_ = SlowBcrypt(monkeypatch)
    auth = BasicAuth({"alice": ALICE_HASH}, max_pending=3)

    async def flood() -> list[Verdict]:
        checks = []
        for password in "abcd":
            checks.append(asyncio.create_task(auth.check(basic("alice", password))))
            await settle()
        busy_at_once = checks[1].done()
        bcrypt_.release.set()
        return [busy_at_once, *await asyncio.gather(*checks)]

    assert asyncio.run(flood()) == [True, Verdict.FAIL, Verdict.BUSY, Verdict.FAIL, Verdict.FAIL]
    assert bcrypt_.calls == [b"a", b"c", b"d"]
    auth.close()


def test_with_one_running_and_no_room_a_new_check_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    bcrypt_ = SlowBcrypt(monkeypatch)
    auth = BasicAuth({"alice": ALICE_HASH}, max_pending=1)

    async def two() -> list[Verdict]:
        running = asyncio.create_task(auth.check(basic("alice", "a")))
        await settle()
        second = await auth.check(basic("alice", "b"))
        bcrypt_.release.set()
        return [await running, second]

    assert asyncio.run(two()) == [Verdict.FAIL, Verdict.BUSY]
    auth.close()


def test_same_credentials_pending_share_one_check(monkeypatch: pytest.MonkeyPatch) -> None:
    bcrypt_ = SlowBcrypt(monkeypatch)
    auth = BasicAuth({"alice": ALICE_HASH}, max_pending=1)

    async def same() -> list[Verdict]:
        checks = [asyncio.create_task(auth.check(basic("alice", "no"))) for _ in range(5)]
        await settle()
        bcrypt_.release.set()
        return await asyncio.gather(*checks)

    assert asyncio.run(same()) == [Verdict.FAIL] * 5
    assert bcrypt_.calls == [b"no"]
    auth.close()


def test_a_check_whose_requesters_left_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second check waits behind the first; its requester goes away: it never runs,
    and the right password after it runs next."""
    bcrypt_ = SlowBcrypt(monkeypatch)
    auth = BasicAuth({"alice": ALICE_HASH})

    async def abandon() -> Verdict:
        running = asyncio.create_task(auth.check(basic("alice", "first")))
        abandoned = asyncio.create_task(auth.check(basic("alice", "abandoned")))
        await settle()
        abandoned.cancel()
        right = asyncio.create_task(auth.check(basic("alice", "wonderland")))
        await settle()
        bcrypt_.release.set()
        await running
        return await right

    assert asyncio.run(abandon()) is Verdict.PASS
    assert bcrypt_.calls == [b"first", b"wonderland"]
    auth.close()


def test_a_remembered_pass_never_waits_behind_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth({"alice": ALICE_HASH}, max_pending=1)
    assert asyncio.run(auth.check(basic("alice", "wonderland"))) is Verdict.PASS
    bcrypt_ = SlowBcrypt(monkeypatch)
    guarded = Guard(make_app()[0], auth)

    async def during_a_check() -> tuple[int, int]:
        stuck = asyncio.create_task(auth.check(basic("alice", "wrong")))
        await settle()
        scrape = await call(
            guarded, "GET", "/metrics", {"Authorization": basic("alice", "wonderland")}
        )
        other = await call(guarded, "GET", "/metrics", {"Authorization": basic("alice", "other")})
        bcrypt_.release.set()
        await stuck
        return scrape.status, other.status

    assert asyncio.run(during_a_check()) == (200, 429)
    auth.close()


# --- the Guard: auth and headers around the app ----------------------------------------------


@pytest.fixture
def guarded() -> Guard:
    app, _ = make_app()
    headers = (("X-Frame-Options", "deny"), ("Strict-Transport-Security", "max-age=60"))
    return Guard(app, BasicAuth({"alice": ALICE_HASH}), headers)


def test_guard_401_without_or_with_wrong_credentials(guarded: Guard) -> None:
    for headers in ({}, {"Authorization": basic("alice", "nope")}):
        r = request(guarded, "GET", "/metrics", headers)
        assert r.status == 401
        assert r.headers["www-authenticate"] == "Basic"
        assert r.body == b"Unauthorized\n"
        assert r.headers["x-frame-options"] == "deny"
    assert request(guarded, "GET", "/", {}).status == 401
    assert request(guarded, "GET", "/nope", {}).status == 401


def test_guard_passes_the_right_password(guarded: Guard) -> None:
    r = request(guarded, "GET", "/metrics", {"Authorization": basic("alice", "wonderland")})
    assert r.status == 200
    assert b"bcc_opens_total" in r.body
    assert r.headers["x-frame-options"] == "deny"
    assert r.headers["strict-transport-security"] == "max-age=60"


@pytest.mark.parametrize("path", ["/healthz", "/-/healthy"])
def test_guard_leaves_health_open(guarded: Guard, path: str) -> None:
    r = request(guarded, "GET", path)
    assert (r.status, r.body) == (200, b"ok\n")
    assert r.headers["x-frame-options"] == "deny"


def test_guard_leaves_ready_open(guarded: Guard) -> None:
    # Answered without a password, ready or not: never 401.
    assert request(guarded, "GET", "/-/ready").status in (200, 503)


def test_guard_headers_without_auth() -> None:
    app, _ = make_app()
    guard = Guard(app, None, (("X-Content-Type-Options", "nosniff"),))
    r = request(guard, "GET", "/metrics")
    assert r.status == 200
    assert r.headers["x-content-type-options"] == "nosniff"
