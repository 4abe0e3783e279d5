"""Moved to exporter.http: this name stays for exporter.cli until it imports from there."""

from .http import App, serve
from .http.uvicorn_compat import REQUEST_HEAD_SECONDS

__all__ = ["REQUEST_HEAD_SECONDS", "App", "serve"]
