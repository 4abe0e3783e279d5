"""Virtual address -> file offset in an ELF file, as uprobes want offsets and USDT notes give
addresses (of a probe site and of its semaphore)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
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


_ELF64_SHDR = struct.Struct("<IIQQQQIIQQ")  # sh_name sh_type sh_flags sh_addr sh_offset sh_size
_NT_STAPSDT = 3


@dataclass(frozen=True)
class UsdtNote:
    """A USDT probe's first site as its .note.stapsdt describes it."""

    arguments: list[str]  # `-4@%eax`, `8@%rdx`: a negative size is a signed argument
    semaphore: int  # its address, 0 without one


def usdt_note(path: str | Path, provider: str, name: str) -> UsdtNote | None:
    """The USDT probe's note; None when the file has no such probe. OSError when the file
    cannot be read, ValueError when it is not a 64-bit little-endian ELF file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [_ELF64_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    names_at = sections[shstrndx][4] if shstrndx < shnum else 0
    for sh_name, _, _, _, offset, size, *_ in sections:
        section = data[names_at + sh_name : data.index(b"\0", names_at + sh_name)]
        if section == b".note.stapsdt":
            found = _stapsdt(data[offset : offset + size], provider, name)
            if found is not None:
                return found
    return None


def _stapsdt(notes: bytes, provider: str, name: str) -> UsdtNote | None:
    at = 0
    while at + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, at)
        desc_at = at + 12 + (namesz + 3) // 4 * 4
        desc = notes[desc_at : desc_at + descsz]
        at = desc_at + (descsz + 3) // 4 * 4
        if kind != _NT_STAPSDT:
            continue
        # pc, base, semaphore (3 x 8 bytes), then provider, name and arguments, NUL-ended.
        fields = desc[24:].split(b"\0")
        if len(fields) >= 3 and fields[0].decode() == provider and fields[1].decode() == name:
            (semaphore,) = struct.unpack_from("<Q", desc, 16)
            return UsdtNote(fields[2].decode().split(), semaphore)
    return None
