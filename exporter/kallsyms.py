"""/proc/kallsyms: kernel symbols and their addresses (all zero without CAP_SYSLOG)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

KALLSYMS = Path("/proc/kallsyms")


def symbols(path: Path = KALLSYMS) -> Iterator[tuple[int, bytes, bytes]]:
    """(address, type letter, name) of every symbol, in file order, as bytes: the ksym
    decoder keeps ~120 000 of them and would triple its peak memory with str objects."""
    with path.open("rb") as f:
        for line in f:
            # "ffffffff8137a0e0 T vfs_read" or "ffffffffc06d1010 t foo_init\t[foo]"
            fields = line.split()
            if len(fields) >= 3:
                yield int(fields[0], 16), fields[1], fields[2]


def addresses(names: Iterable[str], path: Path = KALLSYMS) -> dict[str, int]:
    """The address of each wanted symbol found (the first, when a name repeats)."""
    wanted = {name.encode() for name in names}
    found: dict[str, int] = {}
    for address, _, name in symbols(path):
        if name in wanted and name.decode() not in found:
            found[name.decode()] = address
    return found
