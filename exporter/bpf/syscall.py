"""The bpf(2) system call through ctypes, so the daemon can use fds without importing bcc.

Only the commands the daemon needs are wrapped. Attribute layouts follow
include/uapi/linux/bpf.h; the kernel accepts a shorter `bpf_attr`/info struct than its own
and zero-fills the rest, so each struct stops at the last field we use.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import platform
from dataclasses import dataclass

_SYSCALL_NR = {"x86_64": 321, "aarch64": 280}

# The kernel-internal ENOTSUPP leaks to user space from bpf(2) for unsupported map ops.
ENOTSUPP = 524


class Cmd(enum.IntEnum):
    BPF_MAP_LOOKUP_ELEM = 1
    BPF_MAP_GET_NEXT_KEY = 4
    BPF_PROG_TEST_RUN = 10
    BPF_OBJ_GET_INFO_BY_FD = 15
    BPF_MAP_LOOKUP_BATCH = 24
    BPF_LINK_CREATE = 28
    BPF_ENABLE_STATS = 32


class MapType(enum.IntEnum):
    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31
    CGRP_STORAGE = 32
    ARENA = 33


PERCPU_MAP_TYPES = frozenset({MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH})

BPF_STATS_RUN_TIME = 0

# Byte buffers from ctypes.create_string_buffer, reused across calls by the map reader.
Buffer = ctypes.Array[ctypes.c_char]


class BPFError(OSError):
    """A failed bpf(2) command; the message names the command and the errno."""

    def __init__(self, cmd: Cmd, err: int) -> None:
        if err == ENOTSUPP:
            name, reason = "ENOTSUPP", "not supported for this object"
        else:
            name, reason = errno.errorcode.get(err, str(err)), os.strerror(err)
        super().__init__(err, f"bpf({cmd.name}) failed: {name} ({reason})")
        self.cmd = cmd


class _ElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),  # next_key for BPF_MAP_GET_NEXT_KEY
        ("flags", ctypes.c_uint64),
    ]


class _BatchAttr(ctypes.Structure):
    _fields_ = [
        ("in_batch", ctypes.c_uint64),
        ("out_batch", ctypes.c_uint64),
        ("keys", ctypes.c_uint64),
        ("values", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("map_fd", ctypes.c_uint32),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    ]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
    ]


class _EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


class _ProgInfo(ctypes.Structure):
    # Pointer/count pairs stay zero so the kernel copies no arrays back.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),  # since 5.12; older kernels leave it 0
    ]


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    name: str


@dataclass(frozen=True)
class ProgInfo:
    id: int
    type: int
    tag: str
    name: str
    run_time_ns: int
    run_cnt: int
    recursion_misses: int


_syscall = ctypes.CDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]


def _syscall_nr() -> int:
    machine = platform.machine()
    try:
        return _SYSCALL_NR[machine]
    except KeyError:
        raise OSError(errno.ENOSYS, f"bpf(2) syscall number unknown for {machine}") from None


_NR_BPF = _syscall_nr()


def bpf(cmd: Cmd, attr: ctypes.Structure) -> int:
    """Issue one bpf(2) command; returns the kernel's non-negative result."""
    ret = _syscall(_NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        raise BPFError(cmd, ctypes.get_errno())
    return int(ret)


def _address(buf: Buffer | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def map_lookup_elem(fd: int, key: Buffer, value: Buffer) -> None:
    bpf(Cmd.BPF_MAP_LOOKUP_ELEM, _ElemAttr(map_fd=fd, key=_address(key), value=_address(value)))


def map_get_next_key(fd: int, key: Buffer | None, next_key: Buffer) -> None:
    """Fill next_key with the key after `key`, or the first key when `key` is None."""
    attr = _ElemAttr(map_fd=fd, key=_address(key), value=_address(next_key))
    bpf(Cmd.BPF_MAP_GET_NEXT_KEY, attr)


def map_lookup_batch(
    fd: int,
    in_batch: Buffer | None,
    out_batch: Buffer,
    keys: Buffer,
    values: Buffer,
    count: int,
) -> tuple[int, bool]:
    """One BPF_MAP_LOOKUP_BATCH step: (elements copied, whether the map is exhausted).

    The last step reports ENOENT while still copying elements, so its count matters.
    """
    attr = _BatchAttr(
        in_batch=_address(in_batch),
        out_batch=_address(out_batch),
        keys=_address(keys),
        values=_address(values),
        count=count,
        map_fd=fd,
    )
    try:
        bpf(Cmd.BPF_MAP_LOOKUP_BATCH, attr)
    except BPFError as e:
        if e.errno != errno.ENOENT:
            raise
        return attr.count, True
    return attr.count, False


def _obj_info(fd: int, info: ctypes.Structure) -> None:
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.BPF_OBJ_GET_INFO_BY_FD, attr)


def map_info(fd: int) -> MapInfo:
    raw = _MapInfo()
    _obj_info(fd, raw)
    return MapInfo(
        type=raw.type,
        id=raw.id,
        key_size=raw.key_size,
        value_size=raw.value_size,
        max_entries=raw.max_entries,
        map_flags=raw.map_flags,
        name=raw.name.decode(errors="replace"),
    )


def prog_info(fd: int) -> ProgInfo:
    """Program identity and, while an enable_stats() fd is held, its run counters."""
    raw = _ProgInfo()
    _obj_info(fd, raw)
    return ProgInfo(
        id=raw.id,
        type=raw.type,
        tag=bytes(raw.tag).hex(),
        name=raw.name.decode(errors="replace"),
        run_time_ns=raw.run_time_ns,
        run_cnt=raw.run_cnt,
        recursion_misses=raw.recursion_misses,
    )


def enable_stats() -> int:
    """Turn on run_cnt/run_time_ns accounting; it stays on while the returned fd is open."""
    return bpf(Cmd.BPF_ENABLE_STATS, _EnableStatsAttr(type=BPF_STATS_RUN_TIME))


def prog_test_run(prog_fd: int, data: bytes) -> int:
    """Run a program once on `data` (a packet for socket filters) and return its retval."""
    buf = ctypes.create_string_buffer(data, len(data))
    attr = _TestRunAttr(
        prog_fd=prog_fd, data_size_in=len(data), data_in=ctypes.addressof(buf), repeat=1
    )
    bpf(Cmd.BPF_PROG_TEST_RUN, attr)
    return int(attr.retval)
