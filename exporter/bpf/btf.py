"""Types of the running kernel from its BTF (/sys/kernel/btf/vmlinux), in pure Python.

What the header check and BTF field reads (exporter.btf) need: structs and unions by name,
their members (byte or bit offsets, bitfield sizes), and the types behind them (sizes,
signedness, pointer targets, array elements). Types are indexed in one pass; members are
decoded only for the structs asked about. Module BTF (/sys/kernel/btf/<module>) is split BTF:
its type ids and string offsets continue those of vmlinux, which it takes as `base`.

The data comes from the kernel, but nothing here trusts it beyond its bounds: every read is
checked against its section, and a malformed blob raises ValueError, never IndexError or a
loop without end. Format: Documentation/bpf/btf.rst.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

_MAGIC = 0xEB9F
# Deeper than any real type: qualifier chains and anonymous nesting are a handful deep.
_MAX_DEPTH = 64


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
_INT_SIGNED = 1  # BTF_INT_SIGNED, in the encoding bits of an INT's tail
_INT_BOOL = 4
_POINTER_BYTES = 8  # BTF does not record it; BPF (and every kernel with BTF it runs on) is 64-bit


class Member(NamedTuple):
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0: not a bitfield (as far as the member record says)


class Type(NamedTuple):
    """A type with its qualifiers and typedefs looked through."""

    id: int
    kind: Kind
    name: str
    size: int  # bytes
    target: int  # PTR: the pointee's id; ARRAY: the element's id; else 0
    elements: int  # ARRAY: how many; else 0
    signed: bool  # INT and ENUM
    bits: int  # INT: the value's width in bits (less than size * 8 for an old-style bitfield)
    bit_shift: int  # INT: where the value starts within its bytes (old-style bitfield)


class BTF:
    def __init__(self, data: bytes, base: BTF | None = None) -> None:
        self.base = base
        self._order: str = base._order if base else _byte_order(data)
        try:
            header = struct.unpack_from(self._order + "HBBIIIII", data)
        except struct.error:
            raise ValueError("not BTF data: truncated header") from None
        hdr_len, type_off, type_len, str_off, str_len = header[3:]
        if hdr_len < 24 or any(
            start + length > len(data) - hdr_len
            for start, length in ((type_off, type_len), (str_off, str_len))
        ):
            raise ValueError("BTF header: sections outside the data")
        self._types = data[hdr_len + type_off : hdr_len + type_off + type_len]
        self._strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self._btf_type = struct.Struct(self._order + "III")
        self._member = struct.Struct(self._order + "III")
        # Split BTF numbers its types and strings after its base's.
        self._first_id = base.type_count if base else 1
        self._first_string = base.string_bytes if base else 0
        # _offsets[i] = where type (first id + i) starts in this blob's type section.
        self._offsets: list[int] = []
        self._composites: dict[str, list[int]] = {}
        self._index()

    @classmethod
    def load(cls, path: str | Path = VMLINUX_BTF, base: BTF | None = None) -> BTF:
        return cls(Path(path).read_bytes(), base)

    @property
    def type_count(self) -> int:
        """Ids below this are taken (id 0 is void), by this blob and its base."""
        return self._first_id + len(self._offsets)

    @property
    def string_bytes(self) -> int:
        return self._first_string + len(self._strings)

    def member_offset(self, struct_name: str, field_path: str) -> int | None:
        """Byte offset of a member such as "pid" or "__sk_common.skc_family", or None.

        Members of anonymous structs/unions are found as C finds them, without naming
        the anonymous level.
        """
        names = field_path.split(".")
        for type_id in self.composites(struct_name):
            bits = self._path_bits(type_id, names)
            if bits is not None:
                return bits // 8
        return None

    def composites(self, name: str, kind: Kind | None = None) -> list[int]:
        """Ids of the structs and unions named `name` (only of `kind` if given), this blob's
        own: a module's split BTF does not repeat vmlinux's."""
        ids = self._composites.get(name, [])
        return [i for i in ids if kind is None or self.type(i).kind == kind]

    def type(self, type_id: int) -> Type:
        """The type `type_id` names, behind its qualifiers and typedefs."""
        type_id = self.type_id_behind(type_id)
        return self._described(type_id, *self._header(type_id))

    def members(self, type_id: int) -> Iterator[Member]:
        """The members of a struct or union, in order."""
        blob, pos = self._locate(type_id)
        _, info, _ = blob._btf_type.unpack_from(blob._types, pos)
        # With kind_flag set the top 8 bits hold the bitfield size, not the offset.
        flagged = bool(info >> 31)
        pos += 12
        for _ in range(info & 0xFFFF):
            name_off, member_type, offset = blob._member.unpack_from(blob._types, pos)
            if flagged:
                bitfield, offset = offset >> 24, offset & 0xFFFFFF
            else:
                bitfield = 0
            yield Member(self._string(name_off), member_type, offset, bitfield)
            pos += 12

    def find_member(self, type_id: int, name: str, depth: int = 0) -> Member | None:
        """Member `name` of a struct or union, looking through anonymous members as C does;
        its bit offset is from the start of `type_id`."""
        if depth > _MAX_DEPTH:
            raise ValueError(f"BTF type {type_id}: anonymous members nested too deep")
        if self.type(type_id).kind not in (Kind.STRUCT, Kind.UNION):
            return None
        for member in self.members(self.type(type_id).id):
            if member.name == name:
                return member
            if not member.name:
                inner = self.find_member(member.type_id, name, depth + 1)
                if inner is not None:
                    return inner._replace(bit_offset=member.bit_offset + inner.bit_offset)
        return None

    def _index(self) -> None:
        pos, end = 0, len(self._types)
        while pos < end:
            if pos + 12 > end:
                raise ValueError("BTF type section: a type runs past its end")
            self._offsets.append(pos)
            name_off, info, _ = self._btf_type.unpack_from(self._types, pos)
            kind, vlen = _kind(info), info & 0xFFFF
            if kind in (Kind.STRUCT, Kind.UNION) and name_off:
                type_id = self._first_id + len(self._offsets) - 1
                self._composites.setdefault(self._string(name_off), []).append(type_id)
            pos += 12 + _TAIL_BYTES.get(kind, 0) + vlen * _RECORD_BYTES.get(kind, 0)
        if pos != end:
            raise ValueError("BTF type section: the last type runs past its end")

    def _locate(self, type_id: int) -> tuple[BTF, int]:
        """The blob that holds `type_id` (this one or a base) and where in its types."""
        if type_id < self._first_id:
            if self.base is None:
                raise ValueError(f"BTF type {type_id} does not exist (0 is void)")
            return self.base._locate(type_id)
        index = type_id - self._first_id
        if index >= len(self._offsets):
            raise ValueError(f"BTF type {type_id} does not exist ({self.type_count - 1} types)")
        return self, self._offsets[index]

    def _string(self, offset: int) -> str:
        if offset < self._first_string:
            if self.base is None:
                raise ValueError(f"BTF string offset {offset} is out of range")
            return self.base._string(offset)
        start = offset - self._first_string
        end = self._strings.find(b"\0", start)
        if start >= len(self._strings) or end < 0:
            raise ValueError(f"BTF string offset {offset} is out of range")
        return self._strings[start:end].decode(errors="replace")

    def _header(self, type_id: int) -> tuple[Kind, int, int]:
        """(kind, info, size-or-type) of a type."""
        blob, pos = self._locate(type_id)
        _, info, size_or_type = blob._btf_type.unpack_from(blob._types, pos)
        return _kind(info), info, size_or_type

    def _described(self, type_id: int, kind: Kind, info: int, size_or_type: int) -> Type:
        blob, pos = self._locate(type_id)
        name_off = blob._btf_type.unpack_from(blob._types, pos)[0]
        name = self._string(name_off) if name_off else ""
        tail = pos + 12
        if kind == Kind.INT:
            (encoding,) = struct.unpack_from(self._order + "I", blob._types, tail)
            signed = bool((encoding >> 24) & _INT_SIGNED) and not (encoding >> 24) & _INT_BOOL
            shift, bits = (encoding >> 16) & 0xFF, encoding & 0xFF
            return Type(type_id, kind, name, size_or_type, 0, 0, signed, bits, shift)
        if kind == Kind.PTR:
            return Type(type_id, kind, name, _POINTER_BYTES, size_or_type, 0, False, 0, 0)
        if kind == Kind.ARRAY:
            element, _, count = struct.unpack_from(self._order + "III", blob._types, tail)
            size = self._array_bytes(element, count)
            return Type(type_id, kind, name, size, element, count, False, 0, 0)
        if kind in (Kind.ENUM, Kind.ENUM64):
            # kind_flag marks a signed enum (since 6.0; older BTF leaves it 0: unsigned).
            return Type(type_id, kind, name, size_or_type, 0, 0, bool(info >> 31), 0, 0)
        if kind in (Kind.STRUCT, Kind.UNION, Kind.FLOAT):
            return Type(type_id, kind, name, size_or_type, 0, 0, False, 0, 0)
        return Type(type_id, kind, name, 0, size_or_type, 0, False, 0, 0)  # no size: FWD, FUNC..

    def _array_bytes(self, element: int, count: int) -> int:
        """Size of `count` elements, through arrays of arrays without recursing."""
        for _ in range(_MAX_DEPTH):
            element = self.type_id_behind(element)
            if self._header(element)[0] != Kind.ARRAY:
                return count * self.type(element).size
            blob, pos = self._locate(element)
            element, _, inner = struct.unpack_from(self._order + "III", blob._types, pos + 12)
            count *= inner
        raise ValueError(f"BTF type {element}: arrays nested deeper than {_MAX_DEPTH}")

    def type_id_behind(self, type_id: int) -> int:
        """The id behind a type's qualifiers and typedefs."""
        for _ in range(_MAX_DEPTH):
            kind, _, size_or_type = self._header(type_id)
            if kind not in _QUALIFIERS:
                return type_id
            type_id = size_or_type
        raise ValueError(f"BTF type {type_id}: qualifiers nested deeper than {_MAX_DEPTH}")

    def _path_bits(self, type_id: int, names: list[str]) -> int | None:
        bits = 0
        for name in names:
            found = self.find_member(type_id, name)
            if found is None:
                return None
            bits += found.bit_offset
            type_id = found.type_id
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
