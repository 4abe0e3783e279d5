"""Reading a perf ring buffer (a bpf-output event per CPU) from its fd, without libbcc.

The layout is the kernel's (include/uapi/linux/perf_event.h): a control page whose
data_head the kernel advances and whose data_tail we advance, then a power-of-two data area
holding records that may wrap around its end.
"""

from __future__ import annotations

import mmap
import struct

PAGE = mmap.PAGESIZE
PAGES = 8  # data pages per CPU, as bcc's open_perf_buffer: 32 KiB on 4 KiB pages
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
_HEAD, _TAIL, _DATA_OFFSET = 1024, 1032, 1040  # in struct perf_event_mmap_page
_RECORD_HEADER = struct.Struct("=IHH")  # type, misc, size


class PerfBuffer:
    """One CPU's ring. Not thread safe: callers serialize read()."""

    def __init__(self, fd: int, pages: int = PAGES) -> None:
        self.map = mmap.mmap(fd, (1 + pages) * PAGE, mmap.MAP_SHARED)
        self.data_offset, self.data_size = struct.unpack_from("=QQ", self.map, _DATA_OFFSET)
        if not self.data_size:  # kernels before 4.1 leave these 0 and use the fixed layout
            self.data_offset, self.data_size = PAGE, pages * PAGE

    def read(self) -> tuple[list[bytes], int]:
        """The samples' raw data written since the last read, and how many events were lost."""
        head, tail = struct.unpack_from("=QQ", self.map, _HEAD)
        samples: list[bytes] = []
        lost = 0
        while tail < head:
            kind, _, size = _RECORD_HEADER.unpack(self._bytes(tail, _RECORD_HEADER.size))
            body = self._bytes(tail + _RECORD_HEADER.size, size - _RECORD_HEADER.size)
            if kind == PERF_RECORD_SAMPLE:
                (raw_size,) = struct.unpack_from("=I", body)
                samples.append(body[4 : 4 + raw_size])
            elif kind == PERF_RECORD_LOST:
                lost += struct.unpack_from("=QQ", body)[1]
            tail += size
        # Hands the space back to the kernel: only after every record in it was copied out.
        struct.pack_into("=Q", self.map, _TAIL, tail)
        return samples, lost

    def _bytes(self, position: int, length: int) -> bytes:
        start = position % self.data_size
        end = start + length
        base = self.data_offset
        if end <= self.data_size:
            return self.map[base + start : base + end]
        wrapped = end - self.data_size
        return self.map[base + start : base + self.data_size] + self.map[base : base + wrapped]

    def close(self) -> None:
        self.map.close()
