"""exporter.bpf.btf on small BTF blobs built here, one type of every kind before the structs.

If the parser stepped over any kind by the wrong number of bytes, every type after it
would be misread and the struct lookups below would fail.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from exporter.bpf.btf import BTF, Kind
from exporter.btf.fields import Access, FieldError, resolve
from exporter.btf.kernel import KernelBTF


class Blob:
    """Writes raw BTF: a header, the type section, the string section."""

    def __init__(self, order: str = "<", base: Blob | None = None) -> None:
        self.order = order
        self.types = bytearray()
        self.strings = bytearray(b"\0")
        self.count = 0
        # Split BTF (a module's) numbers its types and strings after its base's.
        self.first_id = base.first_id + base.count if base else 1
        self.first_string = base.first_string + len(base.strings) if base else 0

    def name(self, text: str) -> int:
        if not text:
            return 0
        offset = self.first_string + len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def u32(self, *values: int) -> bytes:
        return struct.pack(f"{self.order}{len(values)}I", *values)

    def add(
        self,
        kind: int,
        name: str = "",
        size_or_type: int = 0,
        records: list[bytes] | None = None,
        tail: bytes = b"",
        kind_flag: bool = False,
    ) -> int:
        records = records or []
        info = (kind_flag << 31) | (kind << 24) | len(records)
        self.types += self.u32(self.name(name), info, size_or_type) + tail + b"".join(records)
        self.count += 1
        return self.first_id + self.count - 1

    def member(self, name: str, type_id: int, offset: int) -> bytes:
        return self.u32(self.name(name), type_id, offset)

    def struct(
        self, name: str, size: int, members: list[tuple[str, int, int]], kind_flag: bool = False
    ) -> int:
        records = [self.member(*m) for m in members]
        return self.add(Kind.STRUCT, name, size, records, kind_flag=kind_flag)

    def build(self) -> bytes:
        header = struct.pack(
            self.order + "HBBIIIII",
            0xEB9F,
            1,
            0,
            24,
            0,
            len(self.types),
            len(self.types),
            len(self.strings),
        )
        return header + bytes(self.types) + bytes(self.strings)


def every_kind(blob: Blob) -> int:
    """One type of each kind that is not a struct; returns the id of `int`."""
    b = blob
    int_id = b.add(Kind.INT, "int", 4, tail=b.u32(32))
    ptr = b.add(Kind.PTR, "", int_id)
    b.add(Kind.ARRAY, tail=b.u32(int_id, int_id, 16))
    b.add(Kind.ENUM, "color", 4, [b.u32(b.name("RED"), 0), b.u32(b.name("BLUE"), 1)])
    b.add(Kind.FWD, "later")
    typedef = b.add(Kind.TYPEDEF, "int_t", int_id)
    b.add(Kind.VOLATILE, "", int_id)
    b.add(Kind.CONST, "", typedef)
    b.add(Kind.RESTRICT, "", ptr)
    proto = b.add(Kind.FUNC_PROTO, "", int_id, [b.u32(b.name("a"), int_id), b.u32(0, ptr)])
    func = b.add(Kind.FUNC, "f", proto)
    var = b.add(Kind.VAR, "v", int_id, tail=b.u32(1))
    b.add(Kind.DATASEC, ".data", 4, [b.u32(var, 0, 4)])
    b.add(Kind.FLOAT, "double", 8)
    b.add(Kind.DECL_TAG, "tag", func, tail=b.u32(0xFFFFFFFF))
    b.add(Kind.TYPE_TAG, "user", ptr)
    b.add(Kind.ENUM64, "big", 8, [b.u32(b.name("HUGE"), 0, 1), b.u32(b.name("TINY"), 1, 0)])
    return int_id


def sample(order: str = "<") -> bytes:
    b = Blob(order)
    i = every_kind(b)
    arr = b.add(Kind.ARRAY, tail=b.u32(i, i, 4))
    anon_union = b.add(Kind.UNION, "", 4, [b.member("a", i, 0), b.member("b", i, 0)])
    anon_struct = b.struct("", 8, [("lo", i, 0), ("hi", i, 32)])
    inner = b.struct("inner", 8, [("x", i, 0), ("y", i, 32)])
    inner_t = b.add(Kind.TYPEDEF, "inner_t", inner)
    const_inner_t = b.add(Kind.CONST, "", inner_t)
    b.struct(
        "outer",
        48,
        [
            ("first", i, 0),
            ("", anon_union, 64),
            ("nested", const_inner_t, 128),
            ("", anon_struct, 192),
            ("arr", arr, 256),
        ],
    )
    # kind_flag: the top 8 bits of each offset are the bitfield size.
    b.struct(
        "bits",
        8,
        [
            ("flag", i, (1 << 24) | 0),
            ("mode", i, (3 << 24) | 1),
            ("count", i, 32),
            ("nib", i, (4 << 24) | 40),
        ],
        kind_flag=True,
    )
    b.struct("dup", 4, [("x", i, 0)])
    b.struct("dup", 8, [("x", i, 0), ("z", i, 32)])
    return b.build()


@pytest.fixture(params=["<", ">"], ids=["little_endian", "big_endian"])
def btf(request: pytest.FixtureRequest) -> BTF:
    return BTF(sample(request.param))


@pytest.mark.parametrize(
    ("struct_name", "path", "offset"),
    [
        ("outer", "first", 0),
        ("outer", "a", 8),  # inside an anonymous union
        ("outer", "b", 8),
        ("outer", "nested", 16),
        ("outer", "nested.y", 20),  # through const and typedef
        ("outer", "lo", 24),  # inside an anonymous struct
        ("outer", "hi", 28),
        ("outer", "arr", 32),
        ("inner", "y", 4),
        ("bits", "mode", 0),
        ("bits", "count", 4),
        ("bits", "nib", 5),
        ("dup", "z", 4),  # the second struct of that name has it
    ],
)
def test_member_offset(btf: BTF, struct_name: str, path: str, offset: int) -> None:
    assert btf.member_offset(struct_name, path) == offset


@pytest.mark.parametrize(
    ("struct_name", "path"),
    [
        ("outer", "missing"),
        ("outer", "nested.z"),
        ("outer", "first.x"),  # an int has no members
        ("outer", "arr.x"),
        ("nope", "x"),
        ("color", "RED"),  # an enum is not a struct
    ],
)
def test_absent_member_is_none(btf: BTF, struct_name: str, path: str) -> None:
    assert btf.member_offset(struct_name, path) is None


def test_bad_magic() -> None:
    with pytest.raises(ValueError, match="magic"):
        BTF(b"\0" * 32)


def test_unknown_kind_is_refused_not_misstepped() -> None:
    b = Blob()
    b.add(20, "from_the_future")
    with pytest.raises(ValueError, match="kind 20"):
        BTF(b.build())


def test_split_btf_numbers_after_its_base_and_reaches_into_it(tmp_path: Path) -> None:
    """A module's BTF: its struct points to a struct of vmlinux, found through the module."""
    vmlinux = Blob()
    i = vmlinux.add(Kind.INT, "int", 4, tail=vmlinux.u32((1 << 24) | 32))  # signed
    core = vmlinux.struct("core", 8, [("pad", i, 0), ("x", i, 32)])
    module = Blob(base=vmlinux)
    ptr = module.add(Kind.PTR, "", core)
    module.struct("mod_thing", 16, [("n", i, 0), ("core_ptr", ptr, 64)])
    (tmp_path / "vmlinux").write_bytes(vmlinux.build())
    (tmp_path / "mymod").write_bytes(module.build())
    kernel = KernelBTF(root=tmp_path, release="test")
    assert kernel.vmlinux.composites("mod_thing") == []
    found = resolve(kernel, "struct mod_thing", "core_ptr->x")
    assert found == Access((8, 4), 4, "int", True, "mymod")
    with pytest.raises(FieldError, match=r"struct core has no member y \(BTF of kernel test\)"):
        resolve(kernel, "struct mod_thing", "core_ptr->y")


def test_out_of_range_ids_and_strings_are_errors_not_crashes() -> None:
    b = Blob()
    b.add(Kind.PTR, "", 99)  # points past the last type
    btf = BTF(b.build())
    with pytest.raises(ValueError, match="type 99 does not exist"):
        btf.type(btf.type(1).target)
    b.types += b.u32(1 << 20, Kind.STRUCT << 24, 4)  # a name past the strings
    with pytest.raises(ValueError, match="string offset 1048576 is out of range"):
        BTF(b.build())


def test_a_truncated_type_section_is_refused() -> None:
    b = Blob()
    b.add(Kind.STRUCT, "s", 4, [b.member("x", 0, 0)])
    assert BTF(b.build()).member_offset("s", "x") == 0
    cut = len(b.types) - 4  # the member record loses its last field
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, cut, cut, len(b.strings))
    with pytest.raises(ValueError, match="runs past"):
        BTF(header + bytes(b.types[:cut]) + bytes(b.strings))


def test_a_struct_two_modules_lay_out_differently_is_refused(tmp_path: Path) -> None:
    vmlinux = Blob()
    i = vmlinux.add(Kind.INT, "int", 4, tail=vmlinux.u32(32))
    (tmp_path / "vmlinux").write_bytes(vmlinux.build())
    for module, offset in (("mod_a", 0), ("mod_b", 32), ("mod_c", 0)):
        blob = Blob(base=vmlinux)
        blob.struct("priv", 8, [("x", i, offset)])
        (tmp_path / module).write_bytes(blob.build())
    kernel = KernelBTF(root=tmp_path, release="test")
    with pytest.raises(
        FieldError, match=r"2 structs of that name lay it out differently \(mod_a, mod_b\)"
    ):
        resolve(kernel, "struct priv", "x")
    (tmp_path / "mod_b").unlink()
    assert resolve(KernelBTF(root=tmp_path), "struct priv", "x").offsets == (0,)
