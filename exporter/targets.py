"""Attach targets that can vanish while the daemon runs: the file a uprobe or USDT probe is in.

A uprobe is on an inode. When its file is deleted or replaced (a package upgrade writes a new
file and renames it over the old one), the probe stays on the old inode: processes still
running the old file are traced, processes started from the new one are not, and nothing
fails. The daemon keeps serving and says so: one log line when it happens, and
bcc_exporter_probe_target_missing{program,function,probe} 1 for as long as it lasts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Scrapes may come much more often: a target is looked at (one stat) at most this often.
CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Target:
    """A file as it was when the probe was attached. The modification time is part of it: a
    file written anew may get the inode number just freed, and a file rewritten in place has
    other code at the probed offset."""

    path: str
    dev: int
    ino: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> Target:
        st = os.stat(path)
        return cls(path, st.st_dev, st.st_ino, st.st_mtime_ns)

    def gone(self) -> bool:
        """True when the path no longer leads to the attached file as it was."""
        try:
            now = Target.of(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError:
            return False  # cannot look (permissions): not known to be gone
        return now != self


# (program, function, probe, target)
Key = tuple[str, str, str, Target]


class TargetWatch:
    """Whether each probe's target is still the file it was attached to, rate limited."""

    def __init__(
        self, interval: float = CHECK_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._state: dict[Key, tuple[float, bool]] = {}  # key -> (checked at, gone)
        self._lock = threading.Lock()

    def watch(self, keys: Iterable[Key]) -> None:
        """Watch these from now on; what is no longer attached is forgotten."""
        with self._lock:
            self._state = {k: self._state.get(k, (-float("inf"), False)) for k in keys}

    def missing(self) -> dict[Key, bool]:
        with self._lock:
            now = self.clock()
            for key, (checked, was_gone) in list(self._state.items()):
                if now - checked >= self.interval:
                    self._state[key] = (now, _check(key, was_gone))
            return {key: gone for key, (_, gone) in self._state.items()}


def _check(key: Key, was_gone: bool) -> bool:
    program, function, probe, target = key
    gone = target.gone()
    if gone and not was_gone:
        log.warning(
            'program "%s": %s: %s: %s was deleted or replaced: the probe stays on the old '
            "file; processes started from a new file at that path are not traced (a restart "
            "attaches to it)",
            program,
            function,
            probe,
            target.path,
        )
    elif was_gone and not gone:
        log.info('program "%s": %s: %s: %s is back', program, function, probe, target.path)
    return gone
