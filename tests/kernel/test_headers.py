"""The header check on the real machine: BTF of the running kernel, BCC with its headers.

On the dev/CI VM the headers under /lib/modules/$(uname -r)/build are Debian's 6.1 tree
while the kernel is 6.18, so the check must find task_struct.pid (and more) misplaced.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.bpf.btf import BTF
from exporter.headers import (
    DEFAULT_FIELDS,
    HeaderCheck,
    HeadersSource,
    Mismatch,
    check_headers,
    compare,
    field_key,
    header_offsets,
    headers_source,
    kernel_offsets,
)

from ..conftest import REPO, Daemon, cannot_run, getppid_counter

# Structs whose every named member is checked against bpftool's reading of the same BTF.
BPFTOOL_STRUCTS = ("task_struct", "sock", "sock_common", "request", "sk_buff", "bpf_prog_info")


@pytest.fixture(scope="module")
def btf() -> BTF:
    return BTF.load()


@pytest.fixture(scope="module")
def check() -> HeaderCheck:
    return check_headers()


@pytest.fixture(scope="module")
def bpftool_members() -> dict[str, list[tuple[str, int]]]:
    """{struct: [(member, bit offset)]} from `bpftool btf dump ... format raw`."""
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        cannot_run("bpftool is not installed")
    dump = subprocess.run(
        [bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    members: dict[str, list[tuple[str, int]]] = {}
    current: list[tuple[str, int]] | None = None
    for line in dump.splitlines():
        if line.startswith("["):
            header = re.match(r"\[\d+\] (?:STRUCT|UNION) '([^']+)'", line)
            name = header.group(1) if header else ""
            first = name in BPFTOOL_STRUCTS and name not in members
            current = members.setdefault(name, []) if first else None
        elif current is not None:
            member = re.match(r"\s+'([^']+)' type_id=\d+ bits_offset=(\d+)", line)
            if member and member.group(1) != "(anon)":
                current.append((member.group(1), int(member.group(2))))
    return members


@pytest.mark.parametrize("struct_name", BPFTOOL_STRUCTS)
def test_btf_offsets_agree_with_bpftool(
    btf: BTF, bpftool_members: dict[str, list[tuple[str, int]]], struct_name: str
) -> None:
    members = bpftool_members[struct_name]
    assert members

    ours = {name: btf.member_offset(struct_name, name) for name, _ in members}

    assert ours == {name: bits // 8 for name, bits in members}


def test_btf_finds_members_through_nested_and_anonymous_structs(btf: BTF) -> None:
    # skc_dport and skc_num sit in anonymous unions/structs inside sock_common.
    sk_common = btf.member_offset("sock", "__sk_common")
    assert sk_common is not None
    for name in ("skc_family", "skc_dport", "skc_num", "skc_daddr"):
        inner = btf.member_offset("sock_common", name)
        assert inner is not None, name
        assert btf.member_offset("sock", f"__sk_common.{name}") == sk_common + inner


def test_mismatched_headers_are_named(check: HeaderCheck, btf: BTF) -> None:
    source = headers_source()
    assert (check.headers_path, check.headers_release, check.kernel_release) == (
        source.path,
        source.release,
        os.uname().release,
    )
    assert check.headers_path == os.path.realpath(f"/lib/modules/{os.uname().release}/build")
    assert check.checked == len(DEFAULT_FIELDS)
    # A tree generated for another release: on this VM, Debian 6.1 under a 6.18 kernel.
    assert check.headers_release != check.kernel_release

    assert not check.matched
    by_field = {field_key(m.struct, m.field): m for m in check.mismatches}
    pid = by_field["task_struct.pid"]
    assert pid.kernel_offset == btf.member_offset("task_struct", "pid")
    assert pid.header_offset is not None and pid.header_offset != pid.kernel_offset
    assert "task_struct.pid" in check.warning()
    assert check.kernel_release in check.warning()


def test_kernel_offsets_cover_every_default_field(btf: BTF) -> None:
    offsets = kernel_offsets(btf, DEFAULT_FIELDS)

    assert [key for key, offset in offsets.items() if offset is None] == []


def test_headers_cover_every_default_field(check: HeaderCheck) -> None:
    assert [m for m in check.mismatches if m.header_offset is None] == []


def test_field_missing_from_headers_does_not_hide_the_others(btf: BTF) -> None:
    fields = [("task_struct", "pid"), ("task_struct", "no_such_member"), ("sock", "sk_type")]

    offsets = header_offsets(fields)

    assert offsets["task_struct.no_such_member"] is None
    assert isinstance(offsets["task_struct.pid"], int)
    assert isinstance(offsets["sock.sk_type"], int)
    check = compare(btf, offsets, headers_source())
    absent = Mismatch("task_struct", "no_such_member", None, None)
    assert absent in check.mismatches


def test_compare_flags_only_differing_fields(btf: BTF) -> None:
    pid = btf.member_offset("task_struct", "pid")
    family = btf.member_offset("sock", "__sk_common.skc_family")
    assert pid is not None and family is not None
    source = HeadersSource(path="/headers", release="x", kernel_release="y")

    check = compare(
        btf, {"task_struct.pid": pid, "sock.__sk_common.skc_family": family + 2}, source
    )

    assert check.mismatches == (Mismatch("sock", "__sk_common.skc_family", family + 2, family),)
    assert check.checked == 2
    assert not check.matched
    assert compare(btf, {"task_struct.pid": pid}, source).matched


def test_headers_source_reads_the_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    tree = tmp_path / "usr/src/linux-headers-9.9"
    (tree / "include/generated").mkdir(parents=True)
    (tree / "include/config").mkdir(parents=True)
    (tmp_path / "modules/9.9.1").mkdir(parents=True)
    (tmp_path / "modules/9.9.1/build").symlink_to(tree)

    (tree / "include/config/kernel.release").write_text("9.9.0\n")
    assert headers_source(tmp_path / "modules", "9.9.1") == HeadersSource(
        path=str(tree), release="9.9.0", kernel_release="9.9.1"
    )
    (tree / "include/generated/utsrelease.h").write_text('#define UTS_RELEASE "9.9.0-1-amd64"\n')
    assert headers_source(tmp_path / "modules", "9.9.1").release == "9.9.0-1-amd64"

    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path / "elsewhere"))
    assert headers_source(tmp_path / "modules", "9.9.1") == HeadersSource(
        path=str(tmp_path / "elsewhere"), release=None, kernel_release="9.9.1"
    )


def test_daemon_side_never_loads_bcc() -> None:
    code = (
        "import sys, exporter.headers, exporter.bpf.maps, exporter.bpf.btf;"
        "assert 'bcc' not in sys.modules, 'bcc was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_without_headers_for_the_kernel_the_fallback_headers_compile(
    daemon, write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The image's fallback: Debian's -common then -<arch> trees copied into one, as
    # scripts/bootstrap.sh (image_fallback_headers) builds /opt/kernel-headers.
    modules = Path("/lib/modules") / os.uname().release
    merged = tmp_path / "kernel-headers"
    merged.mkdir()
    for part in ("source", "build"):
        if (modules / part).exists():
            subprocess.run(["cp", "-a", f"{(modules / part).resolve()}/.", str(merged)], check=True)
    no_modules = tmp_path / "no-modules"
    no_modules.mkdir()
    monkeypatch.setenv("BCC_EXPORTER_FALLBACK_HEADERS", str(merged))
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)

    class HostWithoutHeaders(Daemon):
        """The daemon in a mount namespace whose /lib/modules is empty, as in a container on
        a host that has no headers for its kernel."""

        def command(self, args: list[str]) -> list[str]:
            hide = 'mount --bind "$0" /lib/modules && exec "$@"'
            return ["unshare", "-m", "sh", "-c", hide, str(no_modules), *super().command(args)]

    exporter = HostWithoutHeaders(
        [f"--config.file={write_config('good', getppid_counter())}"], tmp_path / "daemon.log"
    )
    try:
        before = exporter.value("bcc_getppid_calls_total", slot="0")
        for _ in range(23):
            os.getppid()
        assert exporter.value("bcc_getppid_calls_total", slot="0") - before >= 23
        assert f"compiling against the fallback headers at {merged}" in exporter.log()
        deadline = time.monotonic() + 60  # the check's verdict comes when it is done
        while not any(
            name == "bcc_exporter_kernel_headers_info" and ("path", str(merged)) in labels
            for name, labels in exporter.scrape()
        ):
            assert time.monotonic() < deadline, exporter.log()
            time.sleep(0.2)
    finally:
        assert exporter.stop() == 0
