"""The peak memory of a process and all its descendants, sampled while they start."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from .common import children

INTERVAL = 0.01  # seconds between samples


class TreePeak:
    """Every INTERVAL, sums Rss and Pss from /proc/PID/smaps_rollup over `pid` and every
    descendant alive at that moment (compile workers live well over 100 ms, so none is
    missed); keeps the largest sums seen until stop()."""

    def __init__(self, pid: int) -> None:
        self.rss_mb = self.pss_mb = 0.0
        self.samples = 0
        self.busy = 0.0  # CPU seconds sampling took: reading smaps_rollup walks page tables
        self.elapsed = 0.0  # seconds from the first sample to stop()
        self._started = time.monotonic()
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            began = time.thread_time()
            rss = pss = 0
            for pid in tree(self._pid):
                fields = rollup(pid)
                rss, pss = rss + fields.get("Rss", 0), pss + fields.get("Pss", 0)
            self.rss_mb, self.pss_mb = max(self.rss_mb, rss / 1024), max(self.pss_mb, pss / 1024)
            self.samples += 1
            self.busy += time.thread_time() - began
            time.sleep(INTERVAL)

    def stop(self) -> TreePeak:
        self._stop.set()
        self._thread.join()
        self.elapsed = time.monotonic() - self._started
        return self


def tree(pid: int) -> list[int]:
    """`pid` and its descendants; those gone while walking are left out."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            pending += children(current)
    return found


def rollup(pid: int) -> dict[str, int]:
    """The kB figures of /proc/PID/smaps_rollup; empty if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines()[1:]:  # the first is the address range
        key, _, rest = line.partition(":")
        if rest.endswith("kB"):
            fields[key] = int(rest.split()[0])
    return fields
