"""Virtual address -> file offset in an ELF file, as uprobes want offsets and USDT notes give
addresses (of a probe site and of its semaphore)."""

from __future__ import annotations

import struct
from pathlib import Path

PT_LOAD = 1
_ELF64_PHDR = struct.Struct("<IIQQQQQQ")  # p_type p_flags p_offset p_vaddr p_paddr p_filesz ...


def file_offset(path: str | Path, vaddr: int) -> int:
    """The file offset that a loaded segment maps at `vaddr` (ELF64, little endian)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, _, p_memsz, _ = _ELF64_PHDR.unpack_from(
            table, i * phentsize
        )
        if p_type == PT_LOAD and p_vaddr <= vaddr < p_vaddr + p_memsz:
            return vaddr - p_vaddr + p_offset
    raise ValueError(f"{path}: no loaded segment holds address {vaddr:#x}")
