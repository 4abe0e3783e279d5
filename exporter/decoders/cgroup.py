"""cgroup: an 8-byte cgroup v2 id -> the cgroup's path ("/system.slice/ssh.service", root "/").

bpf_get_current_cgroup_id() gives the id of the task's cgroup in the v2 hierarchy, which is the
inode number of that cgroup's directory in the cgroup2 file system. The decoder walks the
cgroup2 mount (option `cgroupfs`; by default the first cgroup2 line of /proc/self/mounts,
option `mounts`: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid systems) and names each id
by its directory's path below the mount. Paths are the daemon's view: in its own cgroup
namespace (a container without cgroupns=host) the cgroups outside it are not seen.

The tree is walked at the first decode and again when an id is missing (a cgroup made since),
at most once per MIN_REFRESH_SECONDS (see _refresh.py). Ids still missing (a cgroup removed
before the scrape) decode to "unknown", one series for all of them. With no cgroup2 mounted
(cgroup v1 only) everything is "unknown" and one warning is logged.

`v1: true` (set by the ebpf_exporter v1 translation) decodes as v1.2.5 did: the input is the
text of a previous decoder (v1 configs write `decoders: [uint, cgroup]`), the tree walked is
/sys/fs/cgroup (option `cgroupfs`) whatever is mounted there, the path includes it
("/sys/fs/cgroup/system.slice/ssh.service"), and an id not found is "unknown_cgroup_id:<id>",
looked up again later. v1 named each directory by the first 8 bytes of its file handle
(name_to_handle_at(2): a cgroup's id on cgroup file systems), walking in lexical order with
later directories winning; so does this. On a hybrid host (cgroup2 at /sys/fs/cgroup/unified)
the root cgroup is "/sys/fs/cgroup/unified", and an id that a cgroup v1 hierarchy's directory
also has takes the lexically last path, as in v1.
"""

import ctypes
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._base import TEXT_INPUT, V1, DecoderError, Unresolved, flag
from ._refresh import Snapshot

log = logging.getLogger(__name__)

MOUNTS = "/proc/self/mounts"
V1_ROOT = "/sys/fs/cgroup"
UNKNOWN = b"unknown"
AT_FDCWD = -100
MAX_HANDLE_SZ = 128


class _FileHandle(ctypes.Structure):
    _fields_ = [
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ),
    ]


_libc = ctypes.CDLL(None, use_errno=True)


def handle_id(path: bytes) -> int | None:
    """The first 8 bytes of the file handle of `path` as a number (v1's cgroup id), or None."""
    handle, mount_id = _FileHandle(handle_bytes=MAX_HANDLE_SZ), ctypes.c_int()
    if _libc.name_to_handle_at(AT_FDCWD, path, ctypes.byref(handle), ctypes.byref(mount_id), 0):
        return None
    if handle.handle_bytes < 8:
        return None
    return int.from_bytes(bytes(handle.f_handle[:8]), sys.byteorder)


def walk_handles(root: Path) -> dict[int, bytes]:
    """v1's tree: handle id -> full path of every directory from `root` down, depth first in
    lexical order (Go's filepath.WalkDir), a later directory winning an id."""
    paths: dict[int, bytes] = {}
    pending = [os.fsencode(root)]
    while pending:
        directory = pending.pop()
        found = handle_id(directory)
        if found is not None:
            paths[found] = directory
        try:
            with os.scandir(directory) as entries:
                subdirectories = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:  # removed while walking
            continue
        pending.extend(sorted(subdirectories, reverse=True))  # popped in lexical order
    return paths


def cgroup2_mount(mounts: Path) -> Path | None:
    """The first cgroup2 mount point in a mounts file (fstab format), or None."""
    for line in mounts.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            # Spaces and other specials in mount points are written as octal escapes (\040).
            return Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1]))
    return None


def walk(root: Path) -> dict[int, bytes]:
    """Directory inode -> path below `root` ("/" for root itself)."""
    paths = {root.stat().st_ino: b"/"}
    pending = [(str(root), b"")]
    while pending:
        directory, relative = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        path = relative + b"/" + os.fsencode(entry.name)
                        paths[entry.inode()] = path
                        pending.append((entry.path, path))
        except OSError:  # removed while walking
            continue
    return paths


class CgroupPaths:
    """The cgroup2 tree as {id: path}, read at the first lookup and again on a miss (rate-limited:
    see _refresh.py). Shared by the decoders that start from a cgroup id (cgroup, k8s_*)."""

    def __init__(self, cgroupfs: Path | None, mounts: Path, decoder: str) -> None:
        self._root = cgroupfs
        self._mounts = mounts
        self._decoder = decoder  # names the decoder in the warnings
        self._paths = Snapshot(self._load)
        self._warned = False  # only _load() touches it, under the snapshot's lock

    @property
    def reads(self) -> int:
        """Reads of the tree so far."""
        return self._paths.reads

    @property
    def read_at(self) -> float:
        """When the last read of the tree began (monotonic)."""
        return self._paths.loaded_at

    def find(self, cgroup_id: int) -> tuple[bytes | None, bool]:
        """(the path, None when not found; whether the tree knows it): with no cgroup2 mounted
        there is nothing to know. A miss reads the tree again, unless the last read is too
        recent: compare `reads` before and after to tell which answered."""
        paths = self._paths.current()
        if not paths:  # no cgroup2 here: unknown for good (see _load's warning)
            return None, True
        path = paths.get(cgroup_id)
        if path is None:
            path = self._paths.refresh().get(cgroup_id)
        return path, path is not None

    def _load(self) -> dict[int, bytes]:
        if self._root is None:
            try:
                self._root = cgroup2_mount(self._mounts)
            except OSError as err:
                self._warn_once(f"{self._decoder}: cannot read {self._mounts} ({err})")
                return {}
            if self._root is None:
                self._warn_once(
                    f"{self._decoder}: no cgroup2 file system in {self._mounts} "
                    "(cgroup v1 only?): cgroup ids decode to unknown"
                )
                return {}
        try:
            return walk(self._root)
        except OSError as err:
            self._warn_once(f"{self._decoder}: cannot read {self._root} ({err})")
            return {}

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s", message)


def tree_options(options: Mapping[str, Any]) -> tuple[Path | None, Path]:
    """(the cgroup2 mount given by option `cgroupfs`, or None: find it in option `mounts`)."""
    cgroupfs = options.get("cgroupfs")
    return Path(cgroupfs) if cgroupfs else None, Path(options.get("mounts") or MOUNTS)


class Cgroup:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        self._v1 = flag(options, V1, "cgroup")
        if self._v1:
            if size != TEXT_INPUT:
                raise DecoderError(
                    "cgroup in a v1 config decodes the text of uint, as v1 did: "
                    "decoders [uint, cgroup]"
                )
            root = Path(options.get("cgroupfs") or V1_ROOT)
            self._handles = Snapshot(lambda: walk_handles(root))
            return
        if size == TEXT_INPUT:
            raise DecoderError("cgroup decodes a raw field, so it must be the first decoder")
        if size != 8:
            raise DecoderError(f"cgroup decodes 8-byte cgroup ids, not {size}")
        self._paths = CgroupPaths(*tree_options(options), "cgroup")

    def decode(self, data: bytes) -> bytes:
        if self._v1:
            return self._decode_v1(int(data))
        reads = self._paths.reads
        path, known = self._paths.find(int.from_bytes(data, sys.byteorder))
        if not known and self._paths.reads == reads:
            # Not in a read older than this miss (rate-limited): maybe a cgroup made since.
            raise Unresolved(UNKNOWN)
        return path or UNKNOWN  # not there now: removed, or never a cgroup

    def _decode_v1(self, cgroup_id: int) -> bytes:
        path = self._handles.current().get(cgroup_id) or self._handles.refresh().get(cgroup_id)
        if path is None:
            raise Unresolved(f"unknown_cgroup_id:{cgroup_id}".encode())
        return path
