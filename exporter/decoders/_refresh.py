"""A snapshot of host state (kallsyms, the cgroup tree) read lazily and again on a miss.

The collector caches decoded labels by raw key bytes, so a decoder only sees a key once and a
refresh on a miss is affordable. But a map may hold many keys the host no longer knows (ids of
cgroups removed since, addresses of unloaded modules): each of them is a miss, and re-reading
the world for every one of them would cost a full read per key. So a miss re-reads at most once
per MIN_REFRESH_SECONDS; later misses in that window get the current snapshot.

The window is shorter than any sane scrape interval: a key that first shows up in the next
scrape still gets a fresh read.
"""

import threading
from collections.abc import Callable
from time import monotonic
from typing import Generic, TypeVar

T = TypeVar("T")

MIN_REFRESH_SECONDS = 5.0


def now() -> float:
    """The clock of loaded_at, for read_since()."""
    return monotonic()


class Snapshot(Generic[T]):
    """`load()`'s result, loaded on first use; thread safe (concurrent scrapes)."""

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._value: T | None = None
        # When the last read began (monotonic): the snapshot shows the host as of then.
        self.loaded_at = 0.0
        self._lock = threading.Lock()
        self.reads = 0  # reads so far

    def warm(self) -> None:
        """Load now, in the background, or read again if the last read is older than
        MIN_REFRESH_SECONDS (a program added by a reload shares a table read long ago): the
        first scrape then waits for what is left of the read, if anything, not for all of it
        (kallsyms: ~0.1 s, most of a one-program start's first scrape)."""
        load = self.current if self._value is None else self.refresh
        threading.Thread(target=load, name="decoder-warm", daemon=True).start()

    def read_since(self, moment: float) -> bool:
        """Whether the snapshot was read (its read began) at or after `moment` (now())."""
        return self.loaded_at >= moment

    def current(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._reload()
                value = self._value
        assert value is not None
        return value

    def refresh(self) -> T:
        """Read again after a miss, unless the last read is less than MIN_REFRESH_SECONDS old."""
        with self._lock:
            if self._value is None or monotonic() - self.loaded_at >= MIN_REFRESH_SECONDS:
                self._reload()
            value = self._value
        assert value is not None
        return value

    def _reload(self) -> None:
        started = monotonic()
        self._value = self._load()
        self.loaded_at = started
        self.reads += 1
