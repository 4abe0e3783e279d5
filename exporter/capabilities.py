"""Linux capabilities of this process: names, and dropping them for good (capset(2) via ctypes).

Capabilities belong to a thread, not a process: capset(2) changes only the calling thread's,
and threads started afterwards inherit them. drop() therefore refuses to run while another
thread exists, so no thread can be left holding what the others gave up.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable
from pathlib import Path

# include/uapi/linux/capability.h, in number order.
NAMES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
NUMBERS = {name: number for number, name in enumerate(NAMES)}

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_LAST_CAP = Path("/proc/sys/kernel/cap_last_cap")
_SYSCALL_NR = {
    "x86_64": {"capget": 125, "capset": 126},
    "aarch64": {"capget": 90, "capset": 91},
}


class CapabilityError(Exception):
    """A capability name that does not exist, or a change the kernel refused."""


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_libc = ctypes.CDLL(None, use_errno=True)


def parse(text: str) -> frozenset[int]:
    """`CAP_NET_BIND_SERVICE,cap_syslog` -> their numbers; any case, `CAP_` optional.
    An empty text is no capability; an unknown name is an error naming the known ones."""
    numbers = set()
    for raw in text.split(","):
        word = raw.strip().upper()
        if not word:
            continue
        name = word if word.startswith("CAP_") else f"CAP_{word}"
        if name not in NUMBERS:
            raise CapabilityError(f"unknown capability {raw.strip()!r} (known: {', '.join(NAMES)})")
        numbers.add(NUMBERS[name])
    return frozenset(numbers)


def names(numbers: Iterable[int]) -> list[str]:
    """Capability numbers -> names, in number order (`CAP_<n>` for ones newer than this list)."""
    return [NAMES[n] if n < len(NAMES) else f"CAP_{n}" for n in sorted(numbers)]


def mask(numbers: Iterable[int]) -> int:
    """The /proc/PID/status form (CapEff: ...) of a set of capabilities, as an integer."""
    value = 0
    for n in numbers:
        value |= 1 << n
    return value


def from_mask(value: int) -> frozenset[int]:
    return frozenset(n for n in range(value.bit_length()) if value >> n & 1)


def _syscall(name: str) -> int:
    machine = os.uname().machine
    if machine not in _SYSCALL_NR:
        raise CapabilityError(f"capget/capset: unsupported machine {machine}")
    return _SYSCALL_NR[machine][name]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise CapabilityError(f"{what}: {os.strerror(err)}")


def current() -> tuple[frozenset[int], frozenset[int]]:
    """(effective, permitted) of the calling thread."""
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    _check(_libc.syscall(_syscall("capget"), ctypes.byref(header), data), "capget")
    effective = data[0].effective | data[1].effective << 32
    permitted = data[0].permitted | data[1].permitted << 32
    return from_mask(effective), from_mask(permitted)


def last_cap(path: Path = CAP_LAST_CAP) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return len(NAMES) - 1


def threads(task_dir: Path = Path("/proc/self/task")) -> int:
    return len(os.listdir(task_dir))


def _prctl(option: int, arg: int, what: str) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), what)


def drop(keep: Iterable[int] = ()) -> frozenset[int]:
    """Give up every capability but `keep`, for good: effective, permitted, inheritable,
    ambient and (when allowed: it takes CAP_SETPCAP) the bounding set. Returns what is kept:
    `keep` as far as the process had it. Only while this is the process's only thread."""
    running = threads()
    if running != 1:
        raise CapabilityError(
            f"refusing to drop capabilities with {running} threads running: capset(2) changes "
            "only the calling thread, the others would keep theirs"
        )
    effective, permitted = current()
    kept = frozenset(keep) & permitted
    # Ambient capabilities would be handed to programs this process runs; none are wanted.
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    if 8 in effective:  # CAP_SETPCAP: then the bounding set can shrink too
        for number in range(last_cap() + 1):
            if number not in kept:
                try:
                    _prctl(PR_CAPBSET_DROP, number, "prctl(PR_CAPBSET_DROP)")
                except CapabilityError:
                    if ctypes.get_errno() != errno.EINVAL:  # EINVAL: not a capability here
                        raise
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    value = mask(kept)
    for i in (0, 1):
        word = value >> (32 * i) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = word
        data[i].inheritable = 0
    _check(_libc.syscall(_syscall("capset"), ctypes.byref(header), data), "capset")
    return kept


def keep_caps(on: bool) -> None:
    """PR_SET_KEEPCAPS: keep the permitted set when every uid stops being 0 (setresuid)."""
    _prctl(PR_SET_KEEPCAPS, int(on), "prctl(PR_SET_KEEPCAPS)")


def raise_effective() -> None:
    """Make every permitted capability effective again (a uid change empties the effective
    set even under PR_SET_KEEPCAPS)."""
    _, permitted = current()
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    value = mask(permitted)
    for i in (0, 1):
        data[i].effective = data[i].permitted = value >> (32 * i) & 0xFFFFFFFF
    _check(_libc.syscall(_syscall("capset"), ctypes.byref(header), data), "capset")


def no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: execve() can never grant privileges again (setuid bits, file
    capabilities, and root's full set on exec are all ignored); inherited by children."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")


def die_with_parent(signal_number: int) -> None:
    """PR_SET_PDEATHSIG: the kernel sends `signal_number` when the parent (precisely: the
    thread that started this process) exits."""
    _prctl(PR_SET_PDEATHSIG, signal_number, "prctl(PR_SET_PDEATHSIG)")
