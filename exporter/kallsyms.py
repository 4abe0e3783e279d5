"""/proc/kallsyms: kernel symbols and their addresses (all zero without CAP_SYSLOG)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

KALLSYMS = Path("/proc/kallsyms")

# /proc/kallsyms kept open by hold(): whether a reader sees addresses is decided at open(2).
_held: int | None = None


def hold(path: Path = KALLSYMS) -> None:
    """Keep /proc/kallsyms open, so that reading it later shows the addresses this process may
    see now: the kernel checks CAP_SYSLOG (or kptr_restrict 0 with perf_event_paranoid <= 1)
    once, at open(2), and a process that drops its capabilities still reads them here."""
    global _held
    if _held is None:
        _held = os.open(path, os.O_RDONLY | os.O_CLOEXEC)


class _Positional(io.RawIOBase):
    """A reader of the held fd with its own offset (pread), so readers never share one."""

    def __init__(self, fd: int) -> None:
        self._fd, self._offset = fd, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = os.pread(self._fd, len(buffer), self._offset)
        buffer[: len(data)] = data
        self._offset += len(data)
        return len(data)


def reopened(path: Path) -> Path:
    """A path that opens `path` afresh: for /proc/kallsyms once hold() ran, /proc/self/fd/N,
    which reaches the held file with an offset of its own (readers sharing one offset of this
    seq_file re-walk it from the start at each read) and even where a view is mounted over
    /proc/kallsyms (exporter/compiler/kallsyms_view.py)."""
    if _held is not None and path == KALLSYMS:
        return Path(f"/proc/self/fd/{_held}")
    return path


def open_file(path: Path) -> BinaryIO:
    """`path` to read; /proc/kallsyms through the fd hold() kept, if it ran."""
    if _held is not None and path == KALLSYMS:
        return io.BufferedReader(_Positional(_held), 1 << 16)  # type: ignore[return-value]
    return path.open("rb")


def symbols(path: Path = KALLSYMS, module: bool = False) -> Iterator[tuple[int, bytes, bytes]]:
    """(address, type letter, name) of every symbol, in file order, as bytes: the ksym
    decoder keeps ~120 000 of them and would triple its peak memory with str objects.
    `module`: a module's symbol is named "foo_init\t[foo]", as ebpf_exporter v1 named it."""
    with open_file(path) as f:
        for line in f:
            # "ffffffff8137a0e0 T vfs_read" or "ffffffffc06d1010 t foo_init\t[foo]"
            fields = line.split()
            if len(fields) >= 3:
                name = b"\t".join(fields[2:4]) if module else fields[2]
                yield int(fields[0], 16), fields[1], name


def addresses(names: Iterable[str], path: Path = KALLSYMS) -> dict[str, int]:
    """The address of each wanted symbol found (the first, when a name repeats)."""
    wanted = {name.encode() for name in names}
    found: dict[str, int] = {}
    for address, _, name in symbols(path):
        if name in wanted and name.decode() not in found:
            found[name.decode()] = address
    return found
