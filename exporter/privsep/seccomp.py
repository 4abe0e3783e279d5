"""The server's seccomp filter: the bpf(2) commands that read what it holds, nothing else, and
no TIOCSTI.

The server holds program fds (their run-time stats need them) and map fds; without a filter a
compromised server could BPF_PROG_TEST_RUN a program with a context of its choosing (a
raw-tracepoint program that follows a pointer argument then reads any kernel memory for it),
or write the maps. And a server started from a root shell keeps that terminal: TIOCSTI on it
would type commands into root's shell (the drop also gives the terminal up: TIOCNOTTY). Every
other syscall is allowed: this filter narrows two doors, it is not a sandbox of its own.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

# bpf(2) commands the server uses: reading maps (one element, the next key, batches) and the
# info of the maps and programs it holds (ids, run-time stats).
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
ALLOWED_BPF = (
    BPF_MAP_LOOKUP_ELEM,
    BPF_MAP_GET_NEXT_KEY,
    BPF_OBJ_GET_INFO_BY_FD,
    BPF_MAP_LOOKUP_BATCH,
)
TIOCSTI = 0x5412
TIOCNOTTY = 0x5422

# (AUDIT_ARCH_*, bpf, ioctl) per machine.
_ARCH = {"x86_64": (0xC000003E, 321, 16), "aarch64": (0xC00000B7, 280, 29)}

# Classic BPF, as seccomp(2) runs it.
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_RET_K = 0x06
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_KILL_PROCESS = 0x80000000
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
# struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] (low halves first on both arches)
_NR, _ARCH_OFF, _ARG0, _ARG1 = 0, 4, 16, 24


class SeccompError(OSError):
    pass


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> list[bytes]:
    arch, bpf_nr, ioctl_nr = _ARCH[machine or os.uname().machine]
    deny = _SECCOMP_RET_ERRNO | errno.EPERM
    ops = [
        _op(_LD_W_ABS, _ARCH_OFF),
        _op(_JEQ_K, arch, jt=1),
        _op(_RET_K, _SECCOMP_RET_KILL_PROCESS),  # another ABI (x32, i386): numbers differ
        _op(_LD_W_ABS, _NR),
    ]
    # bpf(2): allowed commands fall through to ALLOW, the others get EPERM.
    checks = [_op(_LD_W_ABS, _ARG0)]
    for index, command in enumerate(ALLOWED_BPF):
        checks.append(_op(_JEQ_K, command, jt=len(ALLOWED_BPF) - index))
    checks += [_op(_RET_K, deny), _op(_RET_K, _SECCOMP_RET_ALLOW)]
    ioctl = [
        _op(_LD_W_ABS, _ARG1),
        _op(_JEQ_K, TIOCSTI, jt=0, jf=1),
        _op(_RET_K, deny),
        _op(_RET_K, _SECCOMP_RET_ALLOW),
    ]
    # nr == bpf -> checks; nr == ioctl -> ioctl; else allow.
    ops.append(_op(_JEQ_K, bpf_nr, jt=2))
    ops.append(_op(_JEQ_K, ioctl_nr, jt=len(checks) + 1))
    ops.append(_op(_RET_K, _SECCOMP_RET_ALLOW))
    return ops + checks + ioctl


class _Filter(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Load the filter for this thread (and the threads it starts); needs NoNewPrivs."""
    if os.uname().machine not in _ARCH:
        raise SeccompError(errno.ENOSYS, f"no seccomp filter for {os.uname().machine}")
    code = b"".join(program())
    buffer = ctypes.create_string_buffer(code, len(code))
    prog = _Filter(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise SeccompError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")


def give_up_terminal() -> None:
    """Detach from the controlling terminal (a daemon started from a shell has one): TIOCSTI
    then fails even where seccomp is unavailable."""
    import fcntl

    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return  # no controlling terminal
    try:
        fcntl.ioctl(fd, TIOCNOTTY)
    except OSError:
        pass
    finally:
        os.close(fd)
