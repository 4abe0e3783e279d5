import struct

import pytest

from exporter.compiler.elf import UsdtNote, file_offset, usdt_note


def elf64(tmp_path, segments):
    """A minimal ELF64 LE file: header + program headers (type, offset, vaddr, memsz)."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, len(segments))  # e_phentsize, e_phnum
    table = b"".join(
        struct.pack("<IIQQQQQQ", p_type, 0, offset, vaddr, vaddr, memsz, memsz, 0x1000)
        for p_type, offset, vaddr, memsz in segments
    )
    path = tmp_path / "a.out"
    path.write_bytes(bytes(header) + table)
    return path


def test_address_maps_through_its_load_segment(tmp_path):
    # text at file 0 / vaddr 0x400000; data at file 0x2000 / vaddr 0x603000 (a PIE gap)
    path = elf64(tmp_path, [(1, 0, 0x400000, 0x1800), (1, 0x2000, 0x603000, 0x500)])
    assert file_offset(path, 0x400123) == 0x123
    assert file_offset(path, 0x603010) == 0x2010


def test_non_load_segments_are_ignored(tmp_path):
    path = elf64(tmp_path, [(4, 0x300, 0x400300, 0x100), (1, 0, 0x400000, 0x1000)])
    assert file_offset(path, 0x400310) == 0x310


def test_address_outside_every_segment_is_an_error(tmp_path):
    path = elf64(tmp_path, [(1, 0, 0x400000, 0x1000)])
    with pytest.raises(ValueError, match="no loaded segment holds address 0x500000"):
        file_offset(path, 0x500000)


def test_not_elf64_le_is_an_error(tmp_path):
    path = tmp_path / "script"
    path.write_bytes(b"#!/bin/sh\n" + bytes(64))
    with pytest.raises(ValueError, match="not a 64-bit little-endian ELF file"):
        file_offset(path, 0)


def with_notes(tmp_path, *probes):
    """A minimal ELF64 LE file whose .note.stapsdt holds (provider, name, args, semaphore)."""
    names = b"\0.shstrtab\0.note.stapsdt\0"
    notes = bytearray()
    for provider, name, args, semaphore in probes:
        desc = struct.pack("<QQQ", 0x1166, 0x2004, semaphore)
        desc += b"\0".join(s.encode() for s in (provider, name, args)) + b"\0"
        notes += struct.pack("<III", 8, len(desc), 3) + b"stapsdt\0"
        notes += desc + bytes(-len(desc) % 4)
    shoff = 64 + len(names) + len(notes)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 1)  # e_shentsize, e_shnum, e_shstrndx
    sections = bytes(64)  # the null section
    sections += struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, 64, len(names), 0, 0, 1, 0)
    sections += struct.pack("<IIQQQQIIQQ", 11, 7, 0, 0, 64 + len(names), len(notes), 0, 0, 4, 0)
    path = tmp_path / "sdt"
    path.write_bytes(bytes(header) + names + bytes(notes) + sections)
    return path


def test_usdt_notes_give_each_probes_arguments_and_semaphore(tmp_path):
    path = with_notes(
        tmp_path, ("demo", "tick", "-4@%eax 8@%rdx", 0), ("python", "gc__start", "-4@%eax", 0x84)
    )
    assert usdt_note(path, "demo", "tick") == UsdtNote(["-4@%eax", "8@%rdx"], 0)
    assert usdt_note(path, "python", "gc__start") == UsdtNote(["-4@%eax"], 0x84)
    assert usdt_note(path, "demo", "tock") is None
