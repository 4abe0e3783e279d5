import platform
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.decoders import DecoderError, build_chain, syscall_tables
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.syscall import Syscall

from ..conftest import cannot_run

REPO = Path(__file__).resolve().parents[2]


def raw(n: int, size: int) -> bytes:
    return n.to_bytes(size, sys.byteorder, signed=n < 0)


@pytest.mark.parametrize("size", [2, 4, 8])
@pytest.mark.parametrize(
    ("arch", "n", "name"),
    [
        ("x86_64", 0, b"read"),
        ("x86_64", 2, b"open"),
        ("x86_64", 39, b"getpid"),
        ("x86_64", 59, b"execve"),
        ("x86_64", 110, b"getppid"),
        ("x86_64", 257, b"openat"),
        ("x86_64", 262, b"newfstatat"),
        ("x86_64", 334, b"rseq"),
        ("x86_64", 424, b"pidfd_send_signal"),
        ("x86_64", 435, b"clone3"),
        ("x86_64", 437, b"openat2"),
        ("x86_64", 450, b"set_mempolicy_home_node"),
        ("arm64", 0, b"io_setup"),
        ("arm64", 25, b"fcntl"),
        ("arm64", 56, b"openat"),
        ("arm64", 63, b"read"),
        ("arm64", 79, b"newfstatat"),
        ("arm64", 80, b"fstat"),
        ("arm64", 163, b"getrlimit"),
        ("arm64", 172, b"getpid"),
        ("arm64", 173, b"getppid"),
        ("arm64", 221, b"execve"),
        ("arm64", 435, b"clone3"),
        ("arm64", 437, b"openat2"),
        ("arm64", 447, b"memfd_secret"),
    ],
)
def test_numbers_of_each_arch(arch: str, n: int, name: bytes, size: int) -> None:
    assert Syscall({"arch": arch}, size).decode(raw(n, size)) == name


def test_arm64_has_no_legacy_calls() -> None:
    # The generic table only has the *at() variants; open and stat never existed on arm64.
    names = set(syscall_tables.ARM64.values())
    assert {"open", "stat", "fork", "arch_specific_syscall", "syscalls"}.isdisjoint(names)
    assert {"openat", "clone", "renameat", "renameat2"} <= names


def test_tables_are_dense_where_the_kernel_is() -> None:
    assert sorted(syscall_tables.X86_64) == [*range(335), *range(424, 451)]
    assert len(syscall_tables.ARM64) == 306
    assert max(syscall_tables.ARM64) == 450


def test_host_table_by_default() -> None:
    machine = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine())
    if machine is None:
        pytest.skip(f"no table for {platform.machine()}")
    expected = syscall_tables.X86_64 if machine == "x86_64" else syscall_tables.ARM64
    assert Syscall({}, 4).decode(raw(100, 4)) == expected[100].encode()


@pytest.mark.parametrize(
    ("n", "size", "text"),
    [
        (451, 4, b"unknown:451"),  # cachestat, Linux 6.5: newer than the tables
        (1000, 2, b"unknown:1000"),
        (-1, 4, b"unknown:-1"),  # skipped by seccomp or ptrace
        (-1, 8, b"unknown:-1"),
        (0xFFFF, 2, b"unknown:65535"),  # narrow fields are unsigned
        (0x40000000 | 0, 4, b"unknown:1073741824"),  # x32 read
    ],
)
def test_unknown_numbers(n: int, size: int, text: bytes) -> None:
    assert Syscall({"arch": "x86_64"}, size).decode(raw(n, size)) == text


def test_one_byte_field_is_unsigned() -> None:
    assert Syscall({"arch": "x86_64"}, 1).decode(bytes([202])) == b"futex"


def test_after_uint() -> None:
    chain = build_chain([{"name": "uint"}, {"name": "syscall", "arch": "x86_64"}], 8)
    assert chain.decode(raw(257, 8)) == "openat"
    assert Syscall({"arch": "arm64"}, TEXT_INPUT).decode(b"56") == b"openat"


def test_text_that_is_no_number_fails_the_key() -> None:
    with pytest.raises(ValueError, match="syscall expects an integer, not b'read'"):
        Syscall({"arch": "x86_64"}, TEXT_INPUT).decode(b"read")


@pytest.mark.parametrize(("arch", "table"), [("aarch64", "ARM64"), ("amd64", "X86_64")])
def test_arch_aliases(arch: str, table: str) -> None:
    assert (
        Syscall({"arch": arch}, 4).decode(raw(56, 4))
        == {"ARM64": b"openat", "X86_64": b"clone"}[table]
    )


@pytest.mark.parametrize("arch", ["riscv64", "", 64, ["x86_64"]])
def test_bad_arch(arch: object) -> None:
    with pytest.raises(DecoderError) as e:
        Syscall({"arch": arch}, 4)
    assert str(e.value) == f"syscall 'arch' must be arm64 or x86_64, not {arch!r}"


def test_machine_without_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    with pytest.raises(DecoderError) as e:
        Syscall({}, 4)
    assert str(e.value) == "syscall has tables for arm64 and x86_64, not for this riscv64 machine"


@pytest.mark.parametrize("size", [3, 16])
def test_other_widths_are_rejected(size: int) -> None:
    with pytest.raises(DecoderError) as e:
        Syscall({"arch": "x86_64"}, size)
    assert str(e.value) == f"syscall decodes 1, 2, 4 or 8 bytes, not {size}"


def test_generated_tables_are_what_the_installed_headers_give() -> None:
    """Regenerate from the newest installed Debian headers, as the generator does without
    --headers: its --check compares the tables, not the provenance lines (a newer build of the
    same kernel series names other directories and the same system calls)."""
    done = subprocess.run(
        [sys.executable, "scripts/gen_syscall_tables.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode == 2:  # no headers or no cpp: it says which
        cannot_run(done.stderr.strip())
    assert done.returncode == 0, done.stderr
