"""Signals from the first instant of the process: the entry point installs them before it
imports anything heavy (the CLI's imports take ~0.3 s, the start-up seconds): a SIGHUP then
is queued until the programs run (systemd's ExecReload right after a start), a SIGTERM or
SIGINT stops the start-up cleanly. Once serving, SIGHUP reloads; uvicorn takes SIGTERM/SIGINT.

A stop is an exception raised by the handler wherever the main thread is, so that a blocking
wait ends at once. CPython drops an exception raised where it cannot propagate (an at-fork
hook, a __del__, a weakref or gc callback), printing "Exception ignored in": a soak run lost a
SIGTERM so, inside logging's at-fork hook as the server forked before dropping privileges, and
the start-up went on until killed. So the server's fork holds the stops (stops_held), and a
stop dropped anywhere else still ends the start-up, at the latest before serving begins.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("bcc_exporter")

STOPS = {signal.SIGTERM, signal.SIGINT}


class Stop(BaseException):
    """SIGTERM or SIGINT during start-up: unwind, detach what is attached, exit 0."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """Installed on main()'s first line, before anything can take long."""

    def __init__(self) -> None:
        self._reload: Callable[[], object] | None = None
        self._pending = False
        self._lock = threading.Lock()
        self._stopped: int | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # main() called from a thread (tests): signals stay as they are
        signal.signal(signal.SIGHUP, self._hup)
        for signum in STOPS:
            signal.signal(signum, self._stop)

    def _hup(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            if self._reload is None:
                self._pending = True
                return
        self._run_reload()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopped = signum
        raise Stop(signum)

    def serving(self, reload: Callable[[], object]) -> None:
        """Reloads run from now on; one asked for during start-up runs now. A stop that was
        dropped during start-up (see the module's docstring) stops it here."""
        if self._stopped is not None:
            raise Stop(self._stopped)
        with self._lock:
            self._reload, pending, self._pending = reload, self._pending, False
        if pending:
            log.info("reloading: SIGHUP during start-up")
            self._run_reload()

    def _run_reload(self) -> None:
        # A reload compiles in workers for seconds: never in the signal handler's frame.
        assert self._reload is not None
        threading.Thread(target=self._reload, name="reload").start()


@contextmanager
def stops_held() -> Iterator[None]:
    """SIGTERM and SIGINT stay pending in the block and are handled as it ends: around an
    os.fork(), whose at-fork hooks (logging's) would drop the Stop raised in them, and whose
    child then starts with them held."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
