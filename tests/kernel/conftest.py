"""Kernel tests share the `daemon` and `write_config` fixtures of tests/conftest.py."""

from ..conftest import REPO, Daemon, free_port

__all__ = ["REPO", "Daemon", "free_port"]
