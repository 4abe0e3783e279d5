"""A struct member path, resolved in the kernel's BTF to the reads that reach it.

A path is spelled as in C after the struct: `bytes_acked`, `f_path.dentry` (a member of a
member: one offset), `real_parent->tgid` (through a pointer: read the pointer, then the
member of what it points to). Each `->` is one more probe read at run time.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..bpf.btf import BTF, Kind, Type
from .kernel import KernelBTF

_PATH = re.compile(r"[A-Za-z_]\w*(?:(?:\.|->)[A-Za-z_]\w*)*")
_STEP = re.compile(r"(\.|->)?([A-Za-z_]\w*)")
_SPELLED_TYPE = re.compile(r"(struct|union)\s+([A-Za-z_]\w*)")


class FieldError(Exception):
    """The field cannot be read through BTF; the message names struct, field and kernel."""


@dataclass(frozen=True)
class Access:
    """How to read a field: follow a pointer at each offset but the last, then read `size`
    bytes at the last one."""

    offsets: tuple[int, ...]
    size: int
    shape: str  # "int" (integers, enums, bool, char), "ptr", or "bytes" (arrays, structs)
    signed: bool
    source: str  # "vmlinux" or the module whose BTF has the struct

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Access:
        return cls(
            offsets=tuple(int(o) for o in data["offsets"]),
            size=int(data["size"]),
            shape=str(data["shape"]),
            signed=bool(data["signed"]),
            source=str(data["source"]),
        )


def parse_type(spelled: str) -> tuple[Kind, str]:
    """`struct task_struct` -> (STRUCT, "task_struct"); ValueError for anything else."""
    found = _SPELLED_TYPE.fullmatch(spelled.strip())
    if not found:
        raise ValueError(f"{spelled.strip()!r} is not `struct NAME` or `union NAME`")
    return (Kind.STRUCT if found.group(1) == "struct" else Kind.UNION), found.group(2)


def parse_path(spelled: str) -> list[tuple[str, str]]:
    """`a.b->c` -> [("", "a"), (".", "b"), ("->", "c")]; ValueError if not such a path."""
    path = re.sub(r"\s+", "", spelled)
    if not _PATH.fullmatch(path):
        raise ValueError(f"{spelled.strip()!r} is not a member path such as a.b->c")
    return [(sep or "", name) for sep, name in _STEP.findall(path)]


def resolve(kernel: KernelBTF, spelled_type: str, spelled_path: str) -> Access:
    """The reads of `spelled_path` in `spelled_type` (`struct NAME`/`union NAME`), from
    vmlinux's BTF or, for a struct vmlinux lacks, a module's."""
    kind, name = parse_type(spelled_type)
    steps = parse_path(spelled_path)
    what = f"{kind.name.lower()} {name}, field {''.join(sep + n for sep, n in steps)}"
    # Each layout found (the access without its source), with the first access that has it.
    found: dict[Access, Access] = {}
    errors: list[str] = []
    for source, btf in kernel.blobs():
        for type_id in btf.composites(name, kind):
            try:
                access = _walk(btf, type_id, steps, source)
            except FieldError as err:
                errors.append(str(err))
                continue
            found.setdefault(replace(access, source=""), access)
        if found and source == "vmlinux":
            break  # a module's struct of the same name is another struct
    if len(found) == 1:
        return next(iter(found.values()))
    where = f"(BTF of kernel {kernel.release})"
    if len(found) > 1:
        raise FieldError(
            f"{what}: {len(found)} structs of that name lay it out differently"
            f" ({', '.join(a.source for a in found.values())}) {where}"
        )
    if not errors:
        raise FieldError(f"{what}: no {kind.name.lower()} {name} {where}")
    raise FieldError(f"{what}: {errors[0]} {where}")


def _walk(btf: BTF, type_id: int, steps: list[tuple[str, str]], source: str) -> Access:
    offsets: list[int] = []
    bits = 0
    current = btf.type(type_id)
    member_bitfield = 0
    spelled = ""
    for sep, name in steps:
        if sep == "->":
            if current.kind != Kind.PTR:
                raise FieldError(f"{spelled} is {_describe(current)}, not a pointer")
            offsets.append(bits // 8)
            bits = 0
            current = btf.type(current.target) if current.target else _VOID
            if current.kind not in (Kind.STRUCT, Kind.UNION):
                raise FieldError(f"{spelled} points to {_describe(current)}, not a struct")
        elif current.kind not in (Kind.STRUCT, Kind.UNION):
            raise FieldError(f"{spelled} is {_describe(current)}, not a struct or union")
        member = btf.find_member(current.id, name)
        spelled += sep + name
        if member is None:
            raise FieldError(f"{_describe(current)} has no member {name}")
        bits += member.bit_offset
        member_bitfield = member.bitfield_size
        current = btf.type(member.type_id)
    if member_bitfield or bits % 8 or (current.kind == Kind.INT and _partial(current)):
        raise FieldError(
            f"{spelled} is a bitfield (BPF reads whole bytes; where a bitfield's bits lie "
            "is the compiler's choice)"
        )
    shape = _SHAPES.get(current.kind)
    if shape is None or current.size == 0:
        raise FieldError(f"{spelled} is {_describe(current)}, which BPF cannot read")
    offsets.append(bits // 8)
    return Access(tuple(offsets), current.size, shape, current.signed, source)


def _partial(t: Type) -> bool:
    """An INT narrower than its bytes, or shifted within them: an old-style bitfield."""
    return t.bits != t.size * 8 or t.bit_shift != 0


def _describe(t: Type) -> str:
    names = {Kind.STRUCT: "struct", Kind.UNION: "union", Kind.ENUM: "enum", Kind.ENUM64: "enum"}
    if t.kind in names:
        return f"{names[t.kind]} {t.name or '(anonymous)'}"
    if t.kind == Kind.PTR:
        return "a pointer"
    if t.kind == Kind.ARRAY:
        return f"an array of {t.elements}"
    return t.name or f"a {t.kind.name.lower()}"


_SHAPES = {
    Kind.INT: "int",
    Kind.ENUM: "int",
    Kind.ENUM64: "int",
    Kind.PTR: "ptr",
    Kind.ARRAY: "bytes",
    Kind.STRUCT: "bytes",
    Kind.UNION: "bytes",
}
# What a pointer to void points to: nothing with members.
_VOID = Type(0, Kind.FWD, "void", 0, 0, 0, False, 0, 0)
