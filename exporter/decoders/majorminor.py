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
"""

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._base import TEXT_INPUT, DecoderError

MINORBITS = 20
DEFAULT_ENCODING = {4: "kernel", 8: "user"}


def _kernel(dev: int) -> tuple[int, int]:
    return dev >> MINORBITS, dev & ((1 << MINORBITS) - 1)


def _user(dev: int) -> tuple[int, int]:
    # glibc's gnu_dev_major/gnu_dev_minor: the ~0xfff and ~0xff are 32-bit masks.
    major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & 0xFFFFF000)
    minor = (dev & 0xFF) | ((dev >> 12) & 0xFFFFFF00)
    return major, minor


class MajorMinor:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size == TEXT_INPUT:
            raise DecoderError("majorminor decodes a raw field, so it must be the first decoder")
        if size not in DEFAULT_ENCODING:
            raise DecoderError(f"majorminor decodes 4 or 8 bytes, not {size}")
        encoding = options.get("encoding", DEFAULT_ENCODING[size])
        if encoding not in ("kernel", "user"):
            raise DecoderError(f"majorminor 'encoding' must be kernel or user, not {encoding!r}")
        device_name = options.get("device_name", False)
        if not isinstance(device_name, bool):
            raise DecoderError(
                f"majorminor 'device_name' must be true or false, not {device_name!r}"
            )
        self._split = _kernel if encoding == "kernel" else _user
        self._block = Path(options.get("sysfs") or "/sys") / "dev" / "block"
        self._device_name = device_name

    def decode(self, data: bytes) -> bytes:
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
