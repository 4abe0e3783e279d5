"""Read every (key, value) pair of a BPF map from its fd, for counters and histograms.

Scrapes read whole maps of up to ~1M entries, so values are decoded in bulk from one
buffer per batch with memoryview.cast; nothing allocates a ctypes object per entry, and
readers stream batch by batch (iter_items) rather than holding every pair at once.
Maps are only ever read: Prometheus wants cumulative counts, and clearing races the
program that writes them.
"""

from __future__ import annotations

import ctypes
import errno
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from exporter.bpf.syscall import (
    ENOTSUPP,
    PERCPU_MAP_TYPES,
    BPFError,
    Buffer,
    MapInfo,
    map_get_next_key,
    map_info,
    map_lookup_batch,
    map_lookup_elem,
)

# memoryview.cast codes for native-endian unsigned integers of each value size.
_UintFormat = Literal["B", "H", "I", "Q"]
_UINT_FORMATS: dict[int, _UintFormat] = {1: "B", 2: "H", 4: "I", 8: "Q"}

# The kernel lays per-CPU values out in 8-byte-aligned slots, one per possible CPU.
_PERCPU_SLOT_ALIGN = 8

# Errors meaning "this map (or kernel) has no batch lookup", not "the read failed".
_NO_BATCH_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP})

BATCH_SIZE = 4096


def possible_cpus(path: str | Path = "/sys/devices/system/cpu/possible") -> list[int]:
    """The possible CPUs ("0-3", "0,2-3"), in order: the slots of a per-CPU value.

    The kernel packs one slot per possible CPU in CPU order, so with holes in the mask
    slot i is CPU possible_cpus()[i], not CPU number i.
    """
    cpus: list[int] = []
    for part in Path(path).read_text().strip().split(","):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


class MapReader:
    """Reads a map whose values are unsigned integers of 1, 2, 4 or 8 bytes.

    Per-CPU maps are summed over CPUs by items(); items_per_cpu() keeps them apart.
    Batch lookup is used unless `batch=False` or the kernel refuses it for this map,
    after which the reader stays on the key-by-key path. Reads are serialised because
    concurrent scrapes would share the reused buffers.
    """

    def __init__(
        self,
        fd: int,
        info: MapInfo | None = None,
        *,
        batch: bool = True,
        cpus: int | None = None,
    ) -> None:
        self.fd = fd
        self.info = info if info is not None else map_info(fd)
        self.batch = batch
        self._format = self._value_format()
        self.percpu = self.info.type in PERCPU_MAP_TYPES
        self.cpus = (cpus if cpus is not None else len(possible_cpus())) if self.percpu else 1
        # Value size in units of the value format, so a strided cast skips slot padding.
        slot = _round_up(self.info.value_size, _PERCPU_SLOT_ALIGN) if self.percpu else 0
        self._stride = slot // self.info.value_size if self.percpu else 1
        self._elem_bytes = slot * self.cpus if self.percpu else self.info.value_size
        self._batch_buffers: tuple[Buffer, Buffer, Buffer, Buffer] | None = None
        self._lock = threading.Lock()

    def _value_format(self) -> _UintFormat:
        try:
            return _UINT_FORMATS[self.info.value_size]
        except KeyError:
            raise ValueError(
                f"map {self.info.name!r} (id {self.info.id}) has {self.info.value_size}-byte "
                "values; only 1, 2, 4 or 8-byte unsigned integers can be read"
            ) from None

    def items(self) -> list[tuple[bytes, int]]:
        """Every (key bytes, value) pair; per-CPU values are summed."""
        return list(self.iter_items())

    def items_per_cpu(self) -> list[tuple[bytes, list[int]]]:
        """Every (key bytes, [value on CPU 0, CPU 1, ...]) pair of a per-CPU map."""
        return list(self.iter_items_per_cpu())

    def iter_items(self) -> Iterator[tuple[bytes, int]]:
        """items(), one batch at a time: a 1M-entry map never exists as 1M Python pairs.

        The map stays locked until the iterator is exhausted or closed."""
        n = self.cpus
        for keys, values in self._chunks():
            if not self.percpu:
                yield from zip(keys, values, strict=True)
                continue
            for i, key in enumerate(keys):
                yield key, sum(values[i * n : (i + 1) * n])

    def iter_items_per_cpu(self) -> Iterator[tuple[bytes, list[int]]]:
        """items_per_cpu(), one batch at a time."""
        if not self.percpu:
            raise ValueError(f"map {self.info.name!r} (id {self.info.id}) is not per-CPU")
        n = self.cpus
        for keys, values in self._chunks():
            for i, key in enumerate(keys):
                yield key, values[i * n : (i + 1) * n]

    def _chunks(self) -> Iterator[tuple[list[bytes], list[int]]]:
        """Keys, and their values flattened as count * cpus integers, a batch at a time."""
        with self._lock:
            if self.batch:
                batches = self._read_batch()
                try:
                    first = next(batches, None)
                except BPFError as e:
                    if e.errno not in _NO_BATCH_ERRNOS:
                        raise
                    self.batch = False  # refused at the first step: nothing was read yet
                else:
                    if first is not None:
                        yield first
                        yield from batches
                    return
            yield self._read_by_key()

    def _keys(self, keys_buf: Buffer, count: int) -> list[bytes]:
        ks = self.info.key_size
        raw = ctypes.string_at(keys_buf, count * ks)
        return [raw[i : i + ks] for i in range(0, len(raw), ks)]

    def _values(self, values_buf: Buffer, count: int) -> list[int]:
        """count * cpus native-endian integers, skipping the padding of per-CPU slots."""
        view = memoryview(values_buf).cast("B")[: count * self._elem_bytes]
        return view.cast(self._format)[:: self._stride].tolist()

    def _alloc_batch(self) -> tuple[Buffer, Buffer, Buffer, Buffer]:
        if self._batch_buffers is None:
            # Hash maps use a 4-byte bucket cursor, arrays a key-sized one.
            token = max(self.info.key_size, 8)
            self._batch_buffers = (
                ctypes.create_string_buffer(token),
                ctypes.create_string_buffer(token),
                ctypes.create_string_buffer(BATCH_SIZE * self.info.key_size),
                ctypes.create_string_buffer(BATCH_SIZE * self._elem_bytes),
            )
        return self._batch_buffers

    def _read_batch(self) -> Iterator[tuple[list[bytes], list[int]]]:
        token_in, token_out, keys_buf, values_buf = self._alloc_batch()
        cursor: Buffer | None = None
        done = False
        while not done:
            count, done = map_lookup_batch(
                self.fd, cursor, token_out, keys_buf, values_buf, BATCH_SIZE
            )
            if count:
                yield self._keys(keys_buf, count), self._values(values_buf, count)
            ctypes.memmove(token_in, token_out, len(token_out))
            cursor = token_in

    def _read_by_key(self) -> tuple[list[bytes], list[int]]:
        """GET_NEXT_KEY + LOOKUP_ELEM, for kernels or map types without batch lookup."""
        ks = self.info.key_size
        key = ctypes.create_string_buffer(ks)
        next_key = ctypes.create_string_buffer(ks)
        value = ctypes.create_string_buffer(self._elem_bytes)
        # A dict because a hash walk restarts from the first key when the current key is
        # deleted (LRU eviction) under it; later reads of a key are the fresher ones.
        found: dict[bytes, list[int]] = {}
        cursor: Buffer | None = None
        while True:
            try:
                map_get_next_key(self.fd, cursor, next_key)
            except BPFError as e:
                if e.errno == errno.ENOENT:
                    break
                raise
            try:
                map_lookup_elem(self.fd, next_key, value)
            except BPFError as e:
                if e.errno != errno.ENOENT:  # deleted between the two calls
                    raise
            else:
                found[next_key.raw] = self._values(value, 1)
            ctypes.memmove(key, next_key, ks)
            cursor = key
        values = [v for per_key in found.values() for v in per_key]
        return list(found), values
