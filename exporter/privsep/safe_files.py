"""Read a config file or program source that only root (or this daemon's user) can have
written, and that nobody can swap while it is read.

As OpenSSH's safe_path: every directory from / to the file, and to wherever a symlink on the
way points, must be owned by root or this process's user and not writable by group or
others; a root-owned sticky directory (/tmp) is the exception, where the next component must
be owned by root or this user (others cannot rename or remove it there). The file is opened
once, without following a last symlink, and checked on the opened fd (fstat), so what is
checked is what is read.
"""

from __future__ import annotations

import os
import stat

MAX_BYTES = 4 << 20  # a config or a program source; more is a mistake (or /dev/zero)
MAX_LINKS = 16


class UnsafePath(Exception):
    """The file or a directory on its way could be changed by another user."""


def owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def read(path: str, insecure: bool = False) -> bytes:
    """The bytes of the file at the absolute `path`; UnsafePath or OSError otherwise.
    `insecure` (--config.allow-insecure-permissions) skips every ownership and mode check."""
    real = os.path.realpath(path) if insecure else safe_realpath(path)
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(f"{path}: not a regular file")
        if not insecure:
            _check_owner_and_mode(path, info, "file")
        data = b""
        while len(data) <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - len(data))
            if not chunk:
                return data
            data += chunk
        raise UnsafePath(f"{path}: larger than {MAX_BYTES} bytes")
    finally:
        os.close(fd)


def listdir(path: str, insecure: bool = False) -> list[str]:
    """The names in the directory at the absolute `path`, checked as read() checks."""
    real = os.path.realpath(path) if insecure else safe_realpath(path)
    info = os.stat(real)
    if insecure and not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(20, "not a directory", path)
    if not insecure:
        _check_directory(path, info)
    return os.listdir(real)


def safe_realpath(path: str, _depth: int = 0) -> str:
    """The real path of `path`, each directory and symlink on the way checked."""
    if not os.path.isabs(path):
        raise UnsafePath(f"{path}: not an absolute path")
    if _depth > MAX_LINKS:
        raise UnsafePath(f"{path}: too many levels of symbolic links")
    current = "/"
    _check_directory("/", os.stat("/"))
    parts = [p for p in path.split("/") if p and p != "."]
    for index, name in enumerate(parts):
        if name == "..":
            current = os.path.dirname(current)
            continue
        parent = os.lstat(current)
        candidate = os.path.join(current, name)
        info = os.lstat(candidate)
        shared = parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        # A sticky directory others can write (checked root-owned): only an entry owned by
        # root or us is safe from them.
        if parent.st_mode & stat.S_ISVTX and shared and info.st_uid not in owners():
            raise UnsafePath(
                f"{candidate}: owned by uid {info.st_uid} in the sticky directory "
                f"{current}, which others can write: only root's or this daemon's own "
                "entries are trusted there"
            )
        if stat.S_ISLNK(info.st_mode):
            # Its directory is safe, so only root or we made this link: follow it, checking
            # the way to its target from / as well.
            target = os.path.join(current, os.readlink(candidate))
            current = safe_realpath(target, _depth + 1)
        else:
            current = candidate
        if index < len(parts) - 1:
            _check_directory(current, os.stat(current))
    return current


def _check_directory(path: str, info: os.stat_result) -> None:
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(20, "not a directory", path)
    sticky_root = info.st_uid == 0 and info.st_mode & stat.S_ISVTX
    if not sticky_root:
        _check_owner_and_mode(path, info, "directory")


def _check_owner_and_mode(path: str, info: os.stat_result, what: str) -> None:
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "others" if mode & stat.S_IWOTH else "group"
        raise UnsafePath(f"{what} {path} is writable by {who} (mode {mode:04o})")
    if info.st_uid not in owners():
        raise UnsafePath(
            f"{what} {path} is owned by uid {info.st_uid}, neither root nor this daemon's user"
        )
