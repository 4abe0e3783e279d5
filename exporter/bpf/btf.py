"""Struct layouts of the running kernel from its BTF (/sys/kernel/btf/vmlinux), in pure Python.

Only what the header check needs: member byte offsets by struct name and dotted path.
Types are indexed in one pass; members are decoded only for the structs asked about.
Format: Documentation/bpf/btf.rst.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from pathlib import Path

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

_MAGIC = 0xEB9F


class Kind(enum.IntEnum):
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# Bytes that follow the 12-byte btf_type: a fixed tail, or vlen records of a fixed size.
_TAIL_BYTES = {Kind.INT: 4, Kind.ARRAY: 12, Kind.VAR: 4, Kind.DECL_TAG: 4}
_RECORD_BYTES = {
    Kind.STRUCT: 12,
    Kind.UNION: 12,
    Kind.ENUM: 8,
    Kind.FUNC_PROTO: 8,
    Kind.DATASEC: 12,
    Kind.ENUM64: 12,
}

# Kinds that only qualify or rename another type; a member's fields live behind them.
_QUALIFIERS = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})


class BTF:
    def __init__(self, data: bytes) -> None:
        self._order = _byte_order(data)
        header = struct.unpack_from(self._order + "HBBIIIII", data)
        hdr_len, type_off, type_len, str_off, str_len = header[3:]
        self._types = data[hdr_len + type_off : hdr_len + type_off + type_len]
        self._strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self._btf_type = struct.Struct(self._order + "III")
        self._member = struct.Struct(self._order + "III")
        # _offsets[type id] = where that btf_type starts; id 0 is void.
        self._offsets: list[int] = [-1]
        self._composites: dict[str, list[int]] = {}
        self._index()

    @classmethod
    def load(cls, path: str | Path = VMLINUX_BTF) -> BTF:
        return cls(Path(path).read_bytes())

    def member_offset(self, struct_name: str, field_path: str) -> int | None:
        """Byte offset of a member such as "pid" or "__sk_common.skc_family", or None.

        Members of anonymous structs/unions are found as C finds them, without naming
        the anonymous level.
        """
        names = field_path.split(".")
        for type_id in self._composites.get(struct_name, ()):
            bits = self._path_bits(type_id, names)
            if bits is not None:
                return bits // 8
        return None

    def _index(self) -> None:
        pos = 0
        while pos < len(self._types):
            type_id = len(self._offsets)
            self._offsets.append(pos)
            name_off, info, _ = self._btf_type.unpack_from(self._types, pos)
            kind, vlen = _kind(info), info & 0xFFFF
            if kind in (Kind.STRUCT, Kind.UNION) and name_off:
                self._composites.setdefault(self._string(name_off), []).append(type_id)
            pos += 12 + _TAIL_BYTES.get(kind, 0) + vlen * _RECORD_BYTES.get(kind, 0)

    def _string(self, offset: int) -> str:
        return self._strings[offset : self._strings.index(b"\0", offset)].decode()

    def _header(self, type_id: int) -> tuple[int, int, int]:
        """(kind, info, size-or-type) of a type."""
        _, info, size_or_type = self._btf_type.unpack_from(self._types, self._offsets[type_id])
        return _kind(info), info, size_or_type

    def _unqualified(self, type_id: int) -> int:
        kind, _, target = self._header(type_id)
        while kind in _QUALIFIERS:
            type_id = target
            kind, _, target = self._header(type_id)
        return type_id

    def _members(self, type_id: int) -> Iterator[tuple[str, int, int]]:
        """(name, type id, bit offset) of each member of a struct or union."""
        _, info, _ = self._header(type_id)
        # With kind_flag set the top 8 bits hold the bitfield size, not the offset.
        offset_mask = 0xFFFFFF if info >> 31 else 0xFFFFFFFF
        pos = self._offsets[type_id] + 12
        for _ in range(info & 0xFFFF):
            name_off, member_type, offset = self._member.unpack_from(self._types, pos)
            yield self._string(name_off), member_type, offset & offset_mask
            pos += 12

    def _find(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of member `name`, looking through anonymous members."""
        type_id = self._unqualified(type_id)
        if self._header(type_id)[0] not in (Kind.STRUCT, Kind.UNION):
            return None
        for member_name, member_type, bits in self._members(type_id):
            if member_name == name:
                return bits, member_type
            if not member_name:
                inner = self._find(member_type, name)
                if inner is not None:
                    return bits + inner[0], inner[1]
        return None

    def _path_bits(self, type_id: int, names: list[str]) -> int | None:
        bits = 0
        for name in names:
            found = self._find(type_id, name)
            if found is None:
                return None
            member_bits, type_id = found
            bits += member_bits
        return bits


def _byte_order(data: bytes) -> str:
    for order in ("<", ">"):
        if len(data) >= 24 and struct.unpack_from(order + "H", data)[0] == _MAGIC:
            return order
    raise ValueError("not BTF data: bad magic")


def _kind(info: int) -> Kind:
    raw = (info >> 24) & 0x1F
    try:
        return Kind(raw)
    except ValueError:
        raise ValueError(f"BTF kind {raw} is unknown to this parser; cannot step over it") from None
