"""Keys that left a program's hash maps (bcc_exporter_map_evictions_total), from the in-kernel
count of keys each map's counter idiom added (programs/include/bcc_exporter.h).

An LRU map evicts silently, and a program deleting a removed cgroup's keys says nothing
either; but every key the idiom adds is counted, so keys gone = keys added - keys present.
The count of added keys is read before the maps (ProgramCollector.collect): keys added after
it are not counted yet, so the difference can only fall short, never run ahead, and it is
exact once the map is quiet. It never goes back (a counter): a read of a map whose keys change
meanwhile may see a key twice or miss one, and a count once shown is kept.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..bpf.maps import MapReader
from ..compiler.prelude import ADDED_MAP
from ..loader import LoadedProgram


def by_map_name(reader: MapReader) -> dict[str, int]:
    """A per-CPU hash keyed by NUL-padded map names (the prelude's counts), summed."""
    return {key.split(b"\0", 1)[0].decode(errors="replace"): value for key, value in reader.items()}


class Evictions:
    """One program's count of keys gone from each hash map a metric reads."""

    def __init__(self, program: LoadedProgram, read_maps: Iterable[str]) -> None:
        fd = program.maps.get(ADDED_MAP)
        # Maps using the counter idiom (it names them) that a metric reads, shown from the start.
        self.total = {name: 0 for name in read_maps if name in program.counted_maps}
        self.reader = MapReader(fd) if fd is not None and self.total else None

    def added(self) -> dict[str, int]:
        """Keys added so far, by map: read before the maps are."""
        return by_map_name(self.reader) if self.reader is not None else {}

    def present(self, added: dict[str, int], entries: dict[str, int]) -> None:
        """The maps' keys as read after `added`: the keys gone since they were added."""
        for name, count in entries.items():
            if name in self.total and name in added:
                self.total[name] = max(self.total[name], added[name] - count)
