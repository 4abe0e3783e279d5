"""safe_files: a config or source is read only if nobody but root (or the daemon's user)
could have written it or any directory on its way (OpenSSH's safe_path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.privsep import safe_files
from exporter.privsep.safe_files import UnsafePath

OTHER = 4242
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown to another uid")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A directory only root can write, under the root-owned sticky /tmp."""
    tmp_path.chmod(0o755)
    return tmp_path


def test_a_file_only_root_could_write_is_read(root: Path):
    path = root / "p.yaml"
    path.write_text("programs: []")
    assert safe_files.read(str(path)) == b"programs: []"


@pytest.mark.parametrize(("mode", "who"), [(0o664, "group"), (0o646, "others")])
def test_a_file_others_can_write_is_refused(root: Path, mode: int, who: str):
    path = root / "p.yaml"
    path.write_text("")
    path.chmod(mode)
    with pytest.raises(
        UnsafePath, match=f"^file {path} is writable by {who} \\(mode 0{mode:o}\\)$"
    ):
        safe_files.read(str(path))


def test_a_file_of_another_user_is_refused(root: Path):
    path = root / "p.yaml"
    path.write_text("")
    os.chown(path, OTHER, -1)
    with pytest.raises(UnsafePath, match=f"owned by uid {OTHER}, neither root"):
        safe_files.read(str(path))


@pytest.mark.parametrize("change", ["mode", "owner"])
def test_a_directory_on_the_way_others_could_change_is_refused(root: Path, change: str):
    directory = root / "a" / "b"
    directory.mkdir(parents=True)
    path = directory / "p.yaml"
    path.write_text("")
    if change == "mode":
        (root / "a").chmod(0o775)
        expected = f"directory {root / 'a'} is writable by group"
    else:
        os.chown(root / "a", OTHER, -1)
        expected = f"directory {root / 'a'} is owned by uid {OTHER}"
    with pytest.raises(UnsafePath, match=expected):
        safe_files.read(str(path))


def test_in_a_sticky_directory_only_root_or_our_entries_are_trusted(root: Path):
    sticky = root / "scratch"
    sticky.mkdir()
    sticky.chmod(0o1777)
    ours = sticky / "ours.yaml"
    ours.write_text("x")
    assert safe_files.read(str(ours)) == b"x"
    theirs = sticky / "theirs"
    theirs.mkdir()
    (theirs / "p.yaml").write_text("x")
    os.chown(theirs, OTHER, -1)
    with pytest.raises(UnsafePath, match=f"{theirs}: owned by uid {OTHER} in the sticky"):
        safe_files.read(str(theirs / "p.yaml"))


def test_a_symlink_is_followed_only_along_a_safe_way(root: Path):
    safe = root / "safe"
    safe.mkdir()
    (safe / "p.yaml").write_text("x")
    (root / "link.yaml").symlink_to(safe / "p.yaml")
    assert safe_files.read(str(root / "link.yaml")) == b"x"
    unsafe = root / "unsafe"
    unsafe.mkdir()
    (unsafe / "p.yaml").write_text("y")
    unsafe.chmod(0o777)
    (root / "bad.yaml").symlink_to(unsafe / "p.yaml")
    with pytest.raises(UnsafePath, match=f"directory {unsafe} is writable by others"):
        safe_files.read(str(root / "bad.yaml"))
    # A link in a directory others can write is refused before it is followed.
    (unsafe / "via.yaml").symlink_to(safe / "p.yaml")
    with pytest.raises(UnsafePath, match=f"directory {unsafe}"):
        safe_files.read(str(unsafe / "via.yaml"))


def test_only_regular_files_of_bounded_size_are_read(root: Path):
    with pytest.raises(UnsafePath, match="not a regular file"):
        safe_files.read("/dev/zero")
    big = root / "big.yaml"
    big.write_bytes(b"#" * (safe_files.MAX_BYTES + 1))
    with pytest.raises(UnsafePath, match="larger than"):
        safe_files.read(str(big))
    with pytest.raises(UnsafePath, match="not an absolute path"):
        safe_files.read("relative.yaml")


def test_insecure_reads_what_it_is_given(root: Path):
    path = root / "p.yaml"
    path.write_text("x")
    path.chmod(0o666)
    assert safe_files.read(str(path), insecure=True) == b"x"


def test_a_directory_listing_is_checked_as_a_read(root: Path):
    directory = root / "conf"
    directory.mkdir()
    (directory / "a.yaml").write_text("")
    assert safe_files.listdir(str(directory)) == ["a.yaml"]
    directory.chmod(0o777)
    with pytest.raises(UnsafePath, match=f"directory {directory} is writable by others"):
        safe_files.listdir(str(directory))
