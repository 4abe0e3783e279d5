"""perf_event_open(2) for the worker: tracepoints linked with a cookie, and BPF output rings.

Tracepoints: bcc's attach_tracepoint cannot set a BPF cookie, and one function on a
wildcard needs one to tell its probes apart: syscall tracepoints hand programs a record whose
first bytes are a pt_regs pointer, not `common_type`. So the worker opens the perf event
itself and links the program to it with the tracepoint's event id as cookie
(`bpf_get_attach_cookie(ctx)`).
Both fds are owned: closing them detaches, nothing is left in tracefs.

Output rings: one bpf-output event per CPU, put into a BPF_PERF_OUTPUT map; the daemon
mmaps and reads them (perf_buffer.py).
"""

from __future__ import annotations

import ctypes
import os

from .syscall import Cmd, bpf

PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
BPF_PERF_EVENT = 41  # enum bpf_attach_type
_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}[os.uname().machine]


class _PerfEventAttr(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("_rest", ctypes.c_uint8 * 68),  # up to PERF_ATTR_SIZE_VER5 (112 bytes), zeroed
    ]


class _LinkCreateAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("bpf_cookie", ctypes.c_uint64),
    ]


_syscall = ctypes.CDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long


def tracepoint_event(event_id: int) -> int:
    """perf_event_open(2) on a tracepoint; with pid -1, CPU 0 it sees every CPU once linked."""
    attr = _PerfEventAttr(type=PERF_TYPE_TRACEPOINT, config=event_id)
    return _open(attr, cpu=0, what=f"tracepoint {event_id}")


def output_event(cpu: int) -> int:
    """A bpf_perf_event_output() ring for one CPU, to put in a BPF_PERF_OUTPUT map."""
    attr = _PerfEventAttr(
        type=PERF_TYPE_SOFTWARE, config=PERF_COUNT_SW_BPF_OUTPUT, sample_type=PERF_SAMPLE_RAW
    )
    return _open(attr, cpu=cpu, what=f"bpf-output on CPU {cpu}")


def _open(attr: _PerfEventAttr, cpu: int, what: str) -> int:
    attr.size = ctypes.sizeof(_PerfEventAttr)
    attr.sample_period = 1
    attr.wakeup_events = 1
    fd = _syscall(
        _NR_PERF_EVENT_OPEN,
        ctypes.byref(attr),
        ctypes.c_int(-1),
        ctypes.c_int(cpu),
        ctypes.c_int(-1),
        ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"perf_event_open({what}): {os.strerror(err)}")
    return int(fd)


def link_perf_event(prog_fd: int, perf_fd: int, cookie: int) -> int:
    """BPF_LINK_CREATE: run prog_fd on the perf event, with `cookie` for bpf_get_attach_cookie."""
    attr = _LinkCreateAttr(
        prog_fd=prog_fd, target_fd=perf_fd, attach_type=BPF_PERF_EVENT, bpf_cookie=cookie
    )
    return bpf(Cmd.BPF_LINK_CREATE, attr)
