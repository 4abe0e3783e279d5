"""Signals from the first instant of the process: the entry point installs them before it
imports anything heavy (the CLI's imports take ~0.3 s, the start-up seconds): a SIGHUP then
is queued until the programs run (systemd's ExecReload right after a start), a SIGTERM or
SIGINT stops the start-up cleanly. Once serving, SIGHUP reloads; uvicorn takes SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("bcc_exporter")


class Stop(BaseException):
    """SIGTERM or SIGINT during start-up: unwind, detach what is attached, exit 0."""


class Signals:
    """Installed on main()'s first line, before anything can take long."""

    def __init__(self) -> None:
        self._reload: Callable[[], object] | None = None
        self._pending = False
        self._lock = threading.Lock()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # main() called from a thread (tests): signals stay as they are
        signal.signal(signal.SIGHUP, self._hup)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _hup(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            if self._reload is None:
                self._pending = True
                return
        self._run_reload()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        raise Stop(signal.Signals(signum).name)

    def serving(self, reload: Callable[[], object]) -> None:
        """Reloads run from now on; one asked for during start-up runs now."""
        with self._lock:
            self._reload, pending, self._pending = reload, self._pending, False
        if pending:
            log.info("reloading: SIGHUP during start-up")
            self._run_reload()

    def _run_reload(self) -> None:
        # A reload compiles in workers for seconds: never in the signal handler's frame.
        assert self._reload is not None
        threading.Thread(target=self._reload, name="reload").start()
