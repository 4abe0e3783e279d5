"""exporter.btf: member paths resolved in the real /sys/kernel/btf/vmlinux (checked against
`bpftool btf dump ... format raw`), the BTF_READ spellings written out, and the cache."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from exporter.btf.cache import CACHE_FILE, CachedFields
from exporter.btf.fields import Access, FieldError, parse_path, parse_type, resolve
from exporter.btf.kernel import BTF_ROOT, KernelBTF
from exporter.btf.spelling import SpellingError, rewrite, spellings

needs_btf = pytest.mark.skipif(
    not (BTF_ROOT / "vmlinux").is_file() or not shutil.which("bpftool"),
    reason="needs /sys/kernel/btf/vmlinux and bpftool",
)


@cache
def raw_dump() -> str:
    return subprocess.run(
        ["bpftool", "btf", "dump", "file", str(BTF_ROOT / "vmlinux"), "format", "raw"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def bpftool_member(struct_name: str, member: str) -> tuple[int, str]:
    """(bits_offset, the raw line of its type behind typedefs) of a direct member, by bpftool."""
    dump = raw_dump()
    block = re.search(rf"^\[\d+\] STRUCT '{struct_name}' .*\n((?:\t.*\n)+)", dump, re.M)
    assert block, struct_name
    found = re.search(rf"\t'{member}' type_id=(\d+) bits_offset=(\d+)\n", block.group(1))
    assert found, member
    type_id = int(found.group(1))
    while True:
        line = re.search(rf"^\[{type_id}\] (.*)$", dump, re.M)
        assert line
        typedef = re.match(r"(?:TYPEDEF|CONST|VOLATILE) '.*' type_id=(\d+)", line.group(1))
        if not typedef:
            return int(found.group(2)), line.group(1)
        type_id = int(typedef.group(1))


@cache
def kernel() -> KernelBTF:
    return KernelBTF()


@needs_btf
@pytest.mark.parametrize(
    ("struct_name", "member", "size", "shape", "signed"),
    [
        ("tcp_sock", "bytes_acked", 8, "int", False),
        ("tcp_sock", "bytes_received", 8, "int", False),
        ("task_struct", "tgid", 4, "int", True),
        ("task_struct", "real_parent", 8, "ptr", False),
        ("task_struct", "comm", 16, "bytes", False),
    ],
)
def test_members_agree_with_bpftool(
    struct_name: str, member: str, size: int, shape: str, signed: bool
) -> None:
    bits, type_line = bpftool_member(struct_name, member)
    access = resolve(kernel(), f"struct {struct_name}", member)
    assert access == Access((bits // 8,), size, shape, signed, "vmlinux")
    if shape == "int":
        assert f"size={size} " in type_line and ("SIGNED" in type_line) == signed
    if shape == "bytes":
        assert f"nr_elems={size}" in type_line  # char comm[16]


@needs_btf
def test_pointer_chain_and_nested_member_agree_with_bpftool() -> None:
    parent_bits, _ = bpftool_member("task_struct", "real_parent")
    tgid_bits, _ = bpftool_member("task_struct", "tgid")
    chain = resolve(kernel(), "struct task_struct", "real_parent -> tgid")
    assert chain.offsets == (parent_bits // 8, tgid_bits // 8)
    common_bits, _ = bpftool_member("sock", "__sk_common")
    family_bits, _ = bpftool_member("sock_common", "skc_family")
    nested = resolve(kernel(), "struct sock", "__sk_common.skc_family")
    assert nested == Access(((common_bits + family_bits) // 8,), 2, "int", False, "vmlinux")


@needs_btf
@pytest.mark.parametrize(
    ("spelled_type", "path", "message"),
    [
        ("struct tcp_sock", "no_such", "struct tcp_sock has no member no_such"),
        ("struct no_such", "x", "no struct no_such"),
        ("struct task_struct", "tgid->x", "tgid is int, not a pointer"),
        ("struct task_struct", "comm.x", "comm is an array of 16, not a struct or union"),
        ("struct task_struct", "sched_migrated", "sched_migrated is a bitfield"),
        ("union task_struct", "pid", "no union task_struct"),
    ],
)
def test_unreadable_fields_are_named(spelled_type: str, path: str, message: str) -> None:
    with pytest.raises(FieldError) as raised:
        resolve(kernel(), spelled_type, path)
    text = str(raised.value)
    assert f"{spelled_type}, field {path.replace(' ', '')}: {message}" in text
    assert text.endswith(f"(BTF of kernel {kernel().release})")


# ------------------------------------------------------------------ spelling


def fixed(spelled_type: str, path: str) -> Access:
    """A stand-in kernel: every field at offset 8 per hop; comm an array, tgid s32, others
    u32; spellings parsed as CachedFields.access parses them."""
    parse_type(spelled_type)
    path = "".join(sep + name for sep, name in parse_path(path))
    hops = path.count("->") + 1
    if path.endswith("comm"):
        return Access((8,) * hops, 16, "bytes", False, "vmlinux")
    if path == "missing":
        raise FieldError(f"{spelled_type}, field missing: no member missing (BTF of kernel x)")
    return Access((8,) * hops, 4, "int", path.endswith("tgid"), "vmlinux")


def body(code: str) -> str:
    """The rewritten program without the header put before it."""
    return rewrite(code, fixed).split('#line 1 "/virtual/main.c"\n', 1)[1]


def test_reads_are_written_out_with_offsets_and_types() -> None:
    code = (
        "u32 a = BTF_READ(sk, struct tcp_sock, bytes_acked);\n"
        "s32 b = BTF_READ(task, struct task_struct, real_parent->tgid);\n"
        "BTF_READ_INTO(key.comm, task, struct task_struct, real_parent->comm);\n"
    )
    assert body(code) == (
        "u32 a = __BTF_VALUE(u32, (sk), 8);\n"
        "s32 b = __BTF_VALUE(s32, __BTF_PTR((task), 8), 8);\n"
        "__BTF_COPY(key.comm, 16, __BTF_PTR((task), 8), 8,"
        ' "struct task_struct.real_parent->comm");\n'
    )


def test_comments_strings_and_other_names_are_left_alone() -> None:
    code = (
        "// BTF_READ(a, struct b, c)\n/* BTF_READ(a, struct b, c) */\n"
        'char s[] = "BTF_READ(";\nint MY_BTF_READ = 1;\n#ifdef BTF_READ\n#endif\n'
    )
    assert spellings(code) == []
    assert rewrite(code, fixed) == code  # nothing to write out: no header either


def test_a_spelling_over_lines_keeps_the_lines_after_it() -> None:
    code = "x = BTF_READ(\n  task,\n  struct task_struct, tgid);\nafter;\n"
    out = body(code)
    assert out.splitlines()[3] == "after;"
    assert out.startswith("x = __BTF_VALUE(s32, (task), 8)\n\n;")


@pytest.mark.parametrize(
    ("code", "where", "message"),
    [
        ("\n  x = BTF_READ(t, struct s, missing);", (2, 7), "field missing: no member missing"),
        ("x = BTF_READ(t, struct s, comm);", (1, 5), "copy it with BTF_READ_INTO"),
        ("x = BTF_READ(t, struct s);", (1, 5), "BTF_READ(ptr, type, path)"),
        ("x = BTF_READ(t, int, pid);", (1, 5), "'int' is not `struct NAME` or `union NAME`"),
        ("x = BTF_READ(t, struct s, a..b);", (1, 5), "'a..b' is not a member path"),
    ],
)
def test_bad_spellings_fail_at_their_line(code: str, where: tuple[int, int], message: str) -> None:
    with pytest.raises(SpellingError) as raised:
        rewrite(code, fixed)
    assert (raised.value.line, raised.value.column) == where
    assert message in str(raised.value)
    assert raised.value.diagnostic().startswith(f"/virtual/main.c:{where[0]}:{where[1]}: error: ")


# ------------------------------------------------------------------ cache


class NoParsing(KernelBTF):
    """A kernel whose BTF must not be read: every field has to come from the cache."""

    def blobs(self):  # type: ignore[no-untyped-def]
        raise AssertionError("parsed BTF although the cache had the field")


@needs_btf
def test_a_second_start_reads_the_cache_not_btf(tmp_path: Path) -> None:
    first = CachedFields(kernel(), tmp_path)
    found = first.access("struct task_struct", "real_parent->tgid")
    first.save()
    assert (tmp_path / CACHE_FILE).stat().st_mode & 0o022 == 0
    second = CachedFields(NoParsing(), tmp_path)
    assert second.access("struct task_struct", "real_parent -> tgid") == found


@needs_btf
def test_a_cache_of_another_kernel_build_is_not_used(tmp_path: Path) -> None:
    first = CachedFields(kernel(), tmp_path)
    first.access("struct task_struct", "tgid")
    first.save()
    other = KernelBTF(release="9.9.9-other")
    with pytest.raises(AssertionError, match="parsed BTF"):
        CachedFields(NoParsing(release=other.release), tmp_path).access(
            "struct task_struct", "tgid"
        )
