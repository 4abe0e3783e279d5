"""Moved to exporter.http.web_config: this name stays for exporter.cli until it imports from
there."""

from .http.web_config import WebConfig, load

__all__ = ["WebConfig", "load"]
