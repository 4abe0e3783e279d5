import logging
import os
import sys
from pathlib import Path

import pytest

from exporter.decoders import DecoderError, Unresolved, _refresh
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.cgroup import Cgroup, cgroup2_mount, handle_id

TREE = ["system.slice/ssh.service", "system.slice/cron.service", "user.slice/user-0.slice"]


def cgroup_id(path: Path) -> bytes:
    """What bpf_get_current_cgroup_id() gives: the inode number of the cgroup's directory."""
    return os.stat(path).st_ino.to_bytes(8, sys.byteorder)


@pytest.fixture
def cgroupfs(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    for path in TREE:
        (root / path).mkdir(parents=True)
    (root / "cgroup.procs").write_text("")  # files are no cgroups
    return root


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(_refresh, "monotonic", lambda: now[0])
    return now


def test_ids_decode_to_paths_below_the_mount(cgroupfs: Path) -> None:
    decoder = Cgroup({"cgroupfs": str(cgroupfs)}, 8)
    assert decoder.decode(cgroup_id(cgroupfs)) == b"/"
    assert decoder.decode(cgroup_id(cgroupfs / "system.slice")) == b"/system.slice"
    for path in TREE:
        assert decoder.decode(cgroup_id(cgroupfs / path)) == f"/{path}".encode()


def test_unknown_ids_are_one_series(cgroupfs: Path) -> None:
    decoder = Cgroup({"cgroupfs": str(cgroupfs)}, 8)
    # The first decode reads the tree: a miss then is final.
    assert decoder.decode(cgroup_id(cgroupfs / "cgroup.procs")) == b"unknown"
    for unknown in (bytes(8), b"\xff" * 8):
        # Missing from a read older than the miss: "unknown" for now, asked again later.
        with pytest.raises(Unresolved) as provisional:
            decoder.decode(unknown)
        assert provisional.value.value == b"unknown"


def test_a_cgroup_made_since_is_found(cgroupfs: Path, clock: list[float]) -> None:
    decoder = Cgroup({"cgroupfs": str(cgroupfs)}, 8)
    assert decoder.decode(cgroup_id(cgroupfs)) == b"/"  # first walk
    (cgroupfs / "kubepods" / "pod1").mkdir(parents=True)
    clock[0] += _refresh.MIN_REFRESH_SECONDS
    assert decoder.decode(cgroup_id(cgroupfs / "kubepods" / "pod1")) == b"/kubepods/pod1"
    assert decoder.decode(cgroup_id(cgroupfs / "kubepods")) == b"/kubepods"


def test_walks_are_rate_limited(cgroupfs: Path, clock: list[float]) -> None:
    decoder = Cgroup({"cgroupfs": str(cgroupfs)}, 8)
    assert decoder.decode(cgroup_id(cgroupfs)) == b"/"
    (cgroupfs / "new").mkdir()
    clock[0] += _refresh.MIN_REFRESH_SECONDS - 0.1
    with pytest.raises(Unresolved):
        decoder.decode(cgroup_id(cgroupfs / "new"))
    clock[0] += 0.1
    assert decoder.decode(cgroup_id(cgroupfs / "new")) == b"/new"


def test_mount_found_in_mounts(tmp_path: Path, cgroupfs: Path) -> None:
    spaced = tmp_path / "cgroup v2"
    (spaced / "a b").mkdir(parents=True)
    mounts = tmp_path / "mounts"
    escaped = str(spaced).replace(" ", "\\040")
    mounts.write_text(
        "sysfs /sys sysfs rw,nosuid 0 0\n"
        f"cgroup {cgroupfs} cgroup rw,relatime,memory 0 0\n"  # v1 hierarchies are skipped
        f"cgroup2 {escaped} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
        f"cgroup2 {cgroupfs} cgroup2 rw 0 0\n"  # the first cgroup2 mount wins
    )
    assert cgroup2_mount(mounts) == spaced
    decoder = Cgroup({"mounts": str(mounts)}, 8)
    assert decoder.decode(cgroup_id(spaced / "a b")) == b"/a b"


def test_cgroupfs_option_wins_over_mounts(tmp_path: Path, cgroupfs: Path) -> None:
    decoder = Cgroup({"cgroupfs": str(cgroupfs), "mounts": str(tmp_path / "missing")}, 8)
    assert decoder.decode(cgroup_id(cgroupfs / "user.slice")) == b"/user.slice"


def test_cgroup_v1_only(
    tmp_path: Path, cgroupfs: Path, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n"
        f"cgroup {cgroupfs} cgroup rw,relatime,cpu 0 0\n"
    )
    decoder = Cgroup({"mounts": str(mounts)}, 8)
    with caplog.at_level(logging.WARNING):
        for path in (cgroupfs, cgroupfs / "user.slice"):
            assert decoder.decode(cgroup_id(path)) == b"unknown"
            clock[0] += _refresh.MIN_REFRESH_SECONDS
    assert [r.getMessage() for r in caplog.records] == [
        f"cgroup: no cgroup2 file system in {mounts} (cgroup v1 only?): "
        "cgroup ids decode to unknown"
    ]


def test_this_process(tmp_path: Path) -> None:
    """Our own cgroup, as /proc/self/cgroup names it, from its id (the directory's inode)."""
    mount = cgroup2_mount(Path("/proc/self/mounts"))
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if mount is None or path is None:
        pytest.skip("no cgroup2 here")
    assert Cgroup({}, 8).decode(cgroup_id(mount / path.lstrip("/"))) == path.encode()


@pytest.mark.parametrize("size", [4, 16])
def test_other_widths_are_rejected(size: int) -> None:
    with pytest.raises(DecoderError) as e:
        Cgroup({}, size)
    assert str(e.value) == f"cgroup decodes 8-byte cgroup ids, not {size}"


def test_text_input_is_rejected() -> None:
    with pytest.raises(DecoderError, match="cgroup decodes a raw field"):
        Cgroup({}, TEXT_INPUT)


def test_v1_decodes_uint_text_to_paths_with_the_root(cgroupfs: Path) -> None:
    decoder = Cgroup({"v1": True, "cgroupfs": str(cgroupfs)}, TEXT_INPUT)

    def text_id(path: Path) -> bytes:
        """v1's id of a directory: its file handle (on cgroupfs, the cgroup id)."""
        return str(handle_id(os.fsencode(path))).encode()

    assert decoder.decode(text_id(cgroupfs)) == str(cgroupfs).encode()
    ssh = cgroupfs / "system.slice/ssh.service"
    assert decoder.decode(text_id(ssh)) == str(ssh).encode()
    with pytest.raises(Unresolved) as unknown:
        decoder.decode(b"12345")
    assert unknown.value.value == b"unknown_cgroup_id:12345"


def test_v1_this_process() -> None:
    """Our own cgroup2 id, as bpf_get_current_cgroup_id() gives it (the directory's inode),
    named as v1 named it: below /sys/fs/cgroup, where a hybrid host has cgroup2 in unified/."""
    mount = cgroup2_mount(Path("/proc/self/mounts"))
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if mount is None or path is None or not mount.is_relative_to("/sys/fs/cgroup"):
        pytest.skip("no cgroup2 below /sys/fs/cgroup here")
    directory = mount / path.lstrip("/")
    text_id = str(os.stat(directory).st_ino).encode()
    assert Cgroup({"v1": True}, TEXT_INPUT).decode(text_id) == str(directory).encode()


def test_v1_decodes_text_only() -> None:
    with pytest.raises(DecoderError, match=r"decoders \[uint, cgroup\]"):
        Cgroup({"v1": True}, 8)
