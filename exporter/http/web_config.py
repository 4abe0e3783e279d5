"""--web.config.file: TLS, basic auth and extra response headers, in the format of Prometheus'
exporter-toolkit (docs/web-configuration.md), so one file serves node_exporter and us alike.

The file is read once, at start: a change needs a restart (exporter-toolkit re-reads it on
every request). Options of exporter-toolkit that cannot be honoured here are refused by name
rather than ignored, since ignoring a security option silently weakens it.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

from ..config import format_validation_error, read_yaml
from ..errors import ConfigError
from .basic_auth import BasicAuth

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
ClientAuth = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
# exporter-toolkit's list, private there "to ensure consistency in the Prometheus ecosystem":
# only these headers may be set, and those with a list only to one of its values.
EXTRA_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
BCRYPT_HASH = re.compile(r"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")
# Paths that answer without basic auth: Kubernetes probes cannot carry a password short of
# writing it into the pod spec, and "ok" tells nobody anything (/-/ready's 503 names the
# programs that failed, as the unauthenticated landing page of Prometheus' own does not; the
# names are the config's, shown by /metrics too). TLS still applies to them.
HEALTH_PATHS = ("/-/healthy", "/healthz")  # /healthz: the alias kept from before
READY_PATH = "/-/ready"
OPEN_PATHS = frozenset({*HEALTH_PATHS, READY_PATH})


def _bcrypt_hash(value: str) -> str:
    if not BCRYPT_HASH.fullmatch(value):
        raise ValueError(
            "not a bcrypt hash (expected $2y$10$ followed by 53 characters, as "
            "`htpasswd -nBC 10 '' | tr -d ':\\n'` prints)"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# exporter-toolkit options with no counterpart here: named, so the error says why.
_UNSUPPORTED = {
    "cert": "use cert_file",
    "key": "use key_file",
    "client_ca": "use client_ca_file",
    "cipher_suites": "OpenSSL's defaults apply",
    "curve_preferences": "OpenSSL's defaults apply",
    "client_allowed_sans": "use a client CA that signs only the allowed clients",
    "rate_limit": "",
}


def _unsupported(field: str) -> ValueError:
    hint = _UNSUPPORTED[field]
    return ValueError(
        "an exporter-toolkit option bcc_exporter does not support" + (f"; {hint}" if hint else "")
    )


class TLSServerConfig(_Strict):
    cert_file: Path
    key_file: Path
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    prefer_server_cipher_suites: bool = True
    cert: Any = None
    key: Any = None
    client_ca: Any = None
    cipher_suites: Any = None
    curve_preferences: Any = None
    client_allowed_sans: Any = None

    @field_validator(
        "cert",
        "key",
        "client_ca",
        "cipher_suites",
        "curve_preferences",
        "client_allowed_sans",
    )
    @classmethod
    def _refuse(cls, value: Any, info: Any) -> Any:
        raise _unsupported(info.field_name)

    @field_validator("client_auth_type")
    @classmethod
    def _honourable(cls, value: str) -> str:
        if value == "RequireAnyClientCert":
            # Python's ssl verifies every client certificate it requires; it has no verify
            # callback to accept any. exporter-toolkit itself calls this mode insecure.
            raise ValueError(
                "RequireAnyClientCert (a certificate required but not verified) cannot be "
                "honoured by Python's ssl module; use RequireAndVerifyClientCert with "
                "client_ca_file"
            )
        return value

    @model_validator(mode="after")
    def _client_ca(self) -> TLSServerConfig:
        verifies = self.client_auth_type.startswith(("Verify", "RequireAndVerify"))
        if self.client_ca_file is not None and self.client_auth_type == "NoClientCert":
            raise ValueError(
                "client_ca_file: given, but client_auth_type is NoClientCert "
                "(use RequireAndVerifyClientCert to require client certificates)"
            )
        if verifies and self.client_ca_file is None:
            raise ValueError(
                f"client_ca_file: required with client_auth_type {self.client_auth_type}"
            )
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version: {self.min_version} is above max_version")
        return self


class HTTPServerConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)
    # Accepted for compatibility; there is no HTTP/2 here to turn on or off.
    http2: bool = True
    headers: dict[str, str] | None = None

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        for name, value in (headers or {}).items():
            if name not in EXTRA_HEADERS:
                raise ValueError(
                    f"header {name!r} cannot be configured (allowed, exactly so spelt: "
                    f"{', '.join(EXTRA_HEADERS)})"
                )
            if not (value.isascii() and value.isprintable()):
                raise ValueError(f"header {name!r}: only printable ASCII can be sent")
            allowed = EXTRA_HEADERS[name]
            if allowed and value not in allowed:
                raise ValueError(
                    f"header {name!r} must be one of {', '.join(allowed)} (got {value!r})"
                )
        return headers


class WebConfigFile(_Strict):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig | None = None
    basic_auth_users: dict[str, Annotated[str, AfterValidator(_bcrypt_hash)]] | None = None
    rate_limit: Any = None

    @field_validator("rate_limit")
    @classmethod
    def _refuse(cls, value: Any) -> Any:
        raise _unsupported("rate_limit")


@dataclass(frozen=True)
class WebConfig:
    """What the server needs: a TLS context (or plain HTTP), users, headers to add."""

    path: Path
    tls: ssl.SSLContext | None
    users: Mapping[str, str]
    headers: tuple[tuple[str, str], ...]
    summary: str

    def authenticator(self) -> BasicAuth | None:
        return BasicAuth(self.users) if self.users else None


def load(path: Path | None) -> WebConfig | None:
    """Parse and check the file, loading its certificates now so that a bad one is a config
    error at start (exit 2), not a failed handshake later."""
    if path is None:
        return None
    raw = read_yaml(path)
    try:
        parsed = WebConfigFile.model_validate({} if raw is None else raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(path, raw, err)) from None
    tls = None
    summary = ["plain HTTP"]
    if parsed.tls_server_config is not None:
        tls, summary[0] = _tls_context(path, parsed.tls_server_config)
    users = dict(parsed.basic_auth_users or {})
    if users:
        summary.append(f"basic auth ({len(users)} user{'s' if len(users) > 1 else ''})")
    headers = tuple(
        (name, value)
        for name, value in ((parsed.http_server_config or HTTPServerConfig()).headers or {}).items()
        if value  # exporter-toolkit: "Unset if blank"
    )
    if headers:
        summary.append("headers " + ", ".join(name for name, _ in headers))
    return WebConfig(path, tls, users, headers, "; ".join(summary))


def _tls_context(path: Path, c: TLSServerConfig) -> tuple[ssl.SSLContext, str]:
    # Relative paths are relative to the web config file, as in exporter-toolkit.
    cert, key = path.parent / c.cert_file, path.parent / c.key_file
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[c.min_version]
    ctx.maximum_version = TLS_VERSIONS[c.max_version]
    if c.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    for field, file in (("cert_file", cert), ("key_file", key)):
        _readable(path, f"tls_server_config.{field}", file)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as err:
        raise ConfigError(
            f"{path}: tls_server_config: cannot use cert_file {cert} with key_file {key}: "
            f"{_ssl_reason(err)}"
        ) from None
    clients = ""
    if c.client_ca_file is not None:
        ca = path.parent / c.client_ca_file
        _readable(path, "tls_server_config.client_ca_file", ca)
        try:
            ctx.load_verify_locations(cafile=ca)
        except ssl.SSLError as err:
            raise ConfigError(
                f"{path}: tls_server_config.client_ca_file: cannot use {ca}: {_ssl_reason(err)}"
            ) from None
        clients = f" against {ca}"
    # RequestClientCert asks for a certificate it neither requires nor verifies, and nothing
    # here reads one: it admits exactly who NoClientCert admits.
    ctx.verify_mode = {
        "NoClientCert": ssl.CERT_NONE,
        "RequestClientCert": ssl.CERT_NONE,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }[c.client_auth_type]
    summary = (
        f"TLS ({c.min_version} to {c.max_version}, certificate {cert}, "
        f"client certificates: {c.client_auth_type}{clients})"
    )
    return ctx, summary


def _readable(path: Path, field: str, file: Path) -> None:
    try:
        file.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: {field}: cannot read {file}: {err.strerror}") from None


def _ssl_reason(err: ssl.SSLError) -> str:
    if err.reason:
        return str(err.reason).lower().replace("_", " ")  # KEY_VALUES_MISMATCH
    return re.sub(r"^\[\w+\] | \(_ssl\.c:\d+\)$", "", str(err))  # [SSL] PEM lib (_ssl.c:3895)
