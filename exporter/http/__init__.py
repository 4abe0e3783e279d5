"""The HTTP front: the ASGI app (app), the web config file (web_config), basic auth
(basic_auth), and uvicorn with the bounds it lacks (uvicorn_compat)."""

from __future__ import annotations

import socket

from . import uvicorn_compat
from .app import App, ASGIApp, Guard
from .web_config import WebConfig


def serve(app: App, listener: socket.socket, web: WebConfig | None = None) -> None:
    """Serve until SIGTERM or SIGINT; over TLS and behind basic auth as `web` says."""
    auth = web.authenticator() if web else None
    asgi: ASGIApp = Guard(app, auth, web.headers) if web else app
    try:
        uvicorn_compat.run(asgi, listener, web.tls if web else None)
    finally:
        if auth:
            auth.close()
