"""majorminor: a device number (dev_t) -> "major:minor" ("254:0"), or the block device's name.

Two encodings exist, and the field width picks one unless `encoding` says otherwise:
- 4 bytes, `encoding: kernel`: the kernel's internal dev_t, major = dev >> 20 and
  minor = dev & 0xfffff (MINORBITS 20), as tracepoints give it (block:block_rq_issue's `dev`)
  and as struct super_block/block_device hold it.
- 8 bytes, `encoding: user`: the user-space encoding of stat(2)'s st_dev (the kernel's
  new_encode_dev/huge_encode_dev, glibc's makedev), 32-bit major and minor:
  major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xfffff000),
  minor = (dev & 0xff) | ((dev >> 12) & 0xffffff00).
A kernel dev_t widened into a u64 key needs `encoding: kernel`.

`device_name: true` names block devices as /dev does, by the DEVNAME of
<sysfs>/dev/block/<major>:<minor>/uevent ("vda", "nvme0n1p1", "dm-0"; `sysfs` defaults to
/sys); numbers that are no block device here (anonymous devices of tmpfs or overlayfs, a disk
removed since) stay "major:minor". Like every label it is decoded once per key: a device that
shows up under a number seen before keeps the old label.

`v1: true` (set by the ebpf_exporter v1 translation) decodes as v1.2.5 did: the first 4 bytes of
a field of 4 bytes or more, in the user encoding (v1 configs store new_encode_dev(dev)), named
by the name column of `partitions` (/proc/partitions: block devices with a size, so an
unbound loop device is not there), and "unknown:major:minor" when it is not there. An unknown
number is looked up again later (a disk attached since), as v1 did on every scrape.
"""

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._base import TEXT_INPUT, V1, DecoderError, Unresolved, flag

MINORBITS = 20
DEFAULT_ENCODING = {4: "kernel", 8: "user"}
PARTITIONS = "/proc/partitions"


def _kernel(dev: int) -> tuple[int, int]:
    return dev >> MINORBITS, dev & ((1 << MINORBITS) - 1)


def _user(dev: int) -> tuple[int, int]:
    # glibc's gnu_dev_major/gnu_dev_minor: the ~0xfff and ~0xff are 32-bit masks.
    major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & 0xFFFFF000)
    minor = (dev & 0xFF) | ((dev >> 12) & 0xFFFFFF00)
    return major, minor


def partition_name(partitions: Path, major: int, minor: int) -> str | None:
    """The name column of the /proc/partitions line of major:minor, as v1 matched it."""
    for line in partitions.read_text().splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[:2] == [str(major), str(minor)]:
            return fields[3]
    return None


class MajorMinor:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size == TEXT_INPUT:
            raise DecoderError("majorminor decodes a raw field, so it must be the first decoder")
        self._v1 = flag(options, V1, "majorminor")
        if self._v1:
            if size < 4:
                raise DecoderError(f"majorminor decodes 4 bytes or more, not {size}")
            if {"encoding", "device_name"} & set(options):
                raise DecoderError("majorminor: v1 takes neither 'encoding' nor 'device_name'")
            self._partitions = Path(options.get("partitions") or PARTITIONS)
            return
        if size not in DEFAULT_ENCODING:
            raise DecoderError(f"majorminor decodes 4 or 8 bytes, not {size}")
        encoding = options.get("encoding", DEFAULT_ENCODING[size])
        if encoding not in ("kernel", "user"):
            raise DecoderError(f"majorminor 'encoding' must be kernel or user, not {encoding!r}")
        self._split = _kernel if encoding == "kernel" else _user
        self._block = Path(options.get("sysfs") or "/sys") / "dev" / "block"
        self._device_name = flag(options, "device_name", "majorminor")

    def decode(self, data: bytes) -> bytes:
        if self._v1:
            return self._decode_v1(data)
        major, minor = self._split(int.from_bytes(data, sys.byteorder))
        number = f"{major}:{minor}"
        if self._device_name:
            try:
                uevent = (self._block / number / "uevent").read_text()
            except OSError:  # not a block device
                return number.encode()
            for line in uevent.splitlines():
                if line.startswith("DEVNAME="):
                    return line[len("DEVNAME=") :].encode()
        return number.encode()

    def _decode_v1(self, data: bytes) -> bytes:
        major, minor = _user(int.from_bytes(data[:4], sys.byteorder))
        name = partition_name(self._partitions, major, minor)
        if name is None:
            raise Unresolved(f"unknown:{major}:{minor}".encode())
        return name.encode()
