"""The /proc/kallsyms a compile sees: only the symbols BCC looks up, in a private mount namespace.

BCC reads all of /proc/kallsyms on every compile (here 121 000 symbols, 5.4 MB the kernel
formats line by line, parsed into a hash map and freed again) to look up a handful of names:
two thirds of a small program's compile, 0.18 s of CPU that becomes 0.06 s with only those
lines (measured with bcc 0.26, a TRACEPOINT_PROBE that returns 0). So the compile workers'
parent (worker.py), once it imported bcc and before it forks a compile, moves to a mount
namespace of its own and bind-mounts a file of just those lines over /proc/kallsyms. Its
compiles inherit that view; no other process sees it, and it ends with them. Our own lookups
(a v1 program's kaddrs) read the real file through the fd kallsyms.hold() opened before.

The names are what bcc 0.26 looks up, read from its source: a bcc that looks up others would
find them missing and could quietly take a fallback, so any other version keeps the full file.
- libbcc's frontend (b_frontend_action.cc): bpf_probe_read_kernel, bpf_probe_read_user;
- python bcc: support_raw_tracepoint (bpf_find_raw_tracepoint, bpf_get_raw_tracepoint),
  support_kfunc (bpf_trampoline_link_prog), support_lsm (bpf_lsm_bpf), and get_syscall_prefix,
  which tries "<prefix>bpf" for prefixes that all end in "sys_" (sys_, __x64_sys_, ...).
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from pathlib import Path

from .. import kallsyms

CHECKED_BCC = "0.26."
NAMES = frozenset(
    {
        b"bpf_probe_read_kernel",
        b"bpf_probe_read_user",
        b"bpf_find_raw_tracepoint",
        b"bpf_get_raw_tracepoint",
        b"bpf_trampoline_link_prog",
        b"bpf_lsm_bpf",
    }
)
SYSCALL_SUFFIX = b"sys_bpf"

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
_libc = ctypes.CDLL(None, use_errno=True)


def looked_up(text: bytes) -> list[bytes]:
    """The lines of /proc/kallsyms text ("ffffffff8137a0e0 T vfs_read\n") of names BCC looks
    up, each with its newline. Found with bytes.find, not a Python loop over the 121 000
    lines: this runs as the compile workers' parent starts, beside the config's validation."""
    found: dict[bytes, None] = {}
    for needle in (*sorted(NAMES), SYSCALL_SUFFIX):
        at = text.find(needle)
        while at != -1:
            begin = text.rfind(b"\n", 0, at) + 1
            end = text.find(b"\n", at)
            end = len(text) if end == -1 else end + 1
            fields = text[begin:end].split()
            if len(fields) >= 3 and (fields[2] in NAMES or fields[2].endswith(SYSCALL_SUFFIX)):
                found[text[begin:end]] = None
            at = text.find(needle, end)
    return list(found)


def narrow(bcc_version: str, path: Path = kallsyms.KALLSYMS) -> str | None:
    """Show this process and the children it forks from now on a /proc/kallsyms of the names
    BCC looks up; None, or why the full file stays (the compiles are then only slower: this
    never fails them). Call while this process has one thread: unshare(2) refuses a new mount
    namespace otherwise."""
    if not bcc_version.startswith(CHECKED_BCC):
        return f"bcc {bcc_version} may look up other symbols than bcc {CHECKED_BCC}x"
    # First: without CAP_SYS_ADMIN (the DaemonSet, the systemd unit) nothing else is done.
    if _libc.unshare(CLONE_NEWNS) != 0:
        return f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}"
    # Private: the bind mount below must not reach the namespace we came from.
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return f"making / private: {os.strerror(ctypes.get_errno())}"
    try:
        kallsyms.hold(path)  # before the view hides it: kaddrs resolve from the real file
        with open(path, "rb") as real:
            lines = looked_up(real.read())
        # 0600, O_EXCL, root's: in a sticky /tmp no other user can replace it before the
        # mount below looks it up by name.
        fd, view = tempfile.mkstemp(prefix="bcc_exporter-kallsyms-")
    except OSError as err:
        return f"cannot make the view: {err}"
    try:
        with os.fdopen(fd, "wb") as f:
            f.writelines(lines)
        if _libc.mount(view.encode(), bytes(path), None, MS_BIND, None) != 0:
            return f"bind mount: {os.strerror(ctypes.get_errno())}"
        return None
    except OSError as err:
        return f"cannot make the view: {err}"
    finally:
        os.unlink(view)  # the bind mount keeps the file while the namespace lives
