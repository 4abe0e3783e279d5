"""Freed heap pages, handed back to the kernel.

glibc keeps the pages of freed memory for reuse until asked to return them (malloc_trim): a
scrape's garbage (the first one reads kallsyms, tracefs and the cgroup tree) and start-up's
(configs, handoff buffers, the loader threads' arenas) would otherwise stay in the daemon's
RSS: ~10 MB of ~69 MB with the default programs.
"""

from __future__ import annotations

import ctypes
import time

# How often a scrape may trim: the first scrape's garbage goes at once, later ones rarely.
TRIM_EVERY_SECONDS = 60.0

_libc = ctypes.CDLL(None)
_trim = getattr(_libc, "malloc_trim", None)  # glibc only
_mallopt = getattr(_libc, "mallopt", None)
_M_MMAP_THRESHOLD = -3  # malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value


def keep_mmap_threshold() -> None:
    """Blocks of 128 KiB and more (a big scrape's lists and dicts) stay mmapped, so freeing
    one gives it back to the kernel: glibc would otherwise raise its threshold after the
    first such block is freed and keep later ones on the heap, in RSS, until a trim."""
    if _mallopt is not None:
        _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release() -> None:
    """Return free heap pages to the kernel (~1 ms; ctypes lets other threads run)."""
    if _trim is not None:
        _trim(0)


class Trimmer:
    """release(), at most once every `every` seconds."""

    def __init__(self, every: float = TRIM_EVERY_SECONDS) -> None:
        self.every = every
        self._last: float | None = None

    def due(self) -> bool:
        return self._last is None or time.monotonic() - self._last >= self.every

    def __call__(self) -> None:
        if self.due():
            self._last = time.monotonic()
            release()
