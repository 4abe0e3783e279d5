"""The ring parsing, on a memfd laid out as the kernel lays out a perf ring (no kernel needed)."""

import mmap
import os
import struct

from exporter.bpf.perf_buffer import PAGE, PERF_RECORD_LOST, PERF_RECORD_SAMPLE, PerfBuffer

PAGES = 1  # a one-page data area makes wrapping easy to arrange


def sample(raw: bytes) -> bytes:
    body = struct.pack("=I", len(raw)) + raw
    body += bytes(-(len(body) + 8) % 8)  # records are 8-byte aligned
    return struct.pack("=IHH", PERF_RECORD_SAMPLE, 0, 8 + len(body)) + body


def lost(count: int) -> bytes:
    return struct.pack("=IHHQQ", PERF_RECORD_LOST, 0, 24, 7, count)


def ring(records: bytes, start: int) -> tuple[int, mmap.mmap]:
    """A memfd ring whose records begin at data position `start` (wrapping past the end)."""
    fd = os.memfd_create("ring")
    os.ftruncate(fd, (1 + PAGES) * PAGE)
    view = mmap.mmap(fd, (1 + PAGES) * PAGE)
    struct.pack_into("=QQQQ", view, 1024, start + len(records), start, PAGE, PAGES * PAGE)
    for i, byte in enumerate(records):
        view[PAGE + (start + i) % (PAGES * PAGE)] = byte
    return fd, view


def test_samples_and_lost_records_are_read_and_the_tail_advanced():
    records = sample(b"first") + lost(5) + sample(b"second")
    fd, view = ring(records, start=0)
    buffer = PerfBuffer(fd, pages=PAGES)
    assert buffer.read() == ([b"first", b"second"], 5)
    assert struct.unpack_from("=Q", view, 1032)[0] == len(records)
    assert buffer.read() == ([], 0)


def test_a_record_wrapping_around_the_end_is_joined():
    records = sample(b"x" * 40) + sample(b"wraps around the end of the data area")
    fd, _ = ring(records, start=PAGE - 60)  # the second record straddles the end
    assert PerfBuffer(fd, pages=PAGES).read() == (
        [b"x" * 40, b"wraps around the end of the data area"],
        0,
    )
