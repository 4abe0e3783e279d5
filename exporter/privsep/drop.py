"""The server's privilege drop: after start-up, the process that serves HTTP is an
unprivileged user and group with no supplementary groups, no capabilities and no way to gain
any (NoNewPrivs), holding only the fds it was handed.

Why not only drop capabilities: a capability-less uid 0 still owns every root-owned file (it
could rewrite the code the spawner runs next, /proc/sys/kernel/core_pattern, ...) and may
signal every root process. Switching uid needs CAP_SETUID and CAP_SETGID at start; a daemon
already started as a non-root user (systemd's DynamicUser) keeps its user.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import resource
from dataclasses import dataclass

from .. import capabilities
from ..errors import ExporterError
from ..signals import stops_held
from . import seccomp

log = logging.getLogger(__name__)


class DropError(ExporterError):
    """The server could not give up its privileges; the daemon does not start."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    name: str

    @classmethod
    def lookup(cls, user: str, group: str) -> Identity:
        """Resolved at start, before anything is dropped (NSS may need files)."""
        try:
            uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        except KeyError:
            raise DropError(f"--user: no user {user!r} on this system") from None
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise DropError(f"--group: no group {group!r} on this system") from None
        if uid == 0 or gid == 0:
            raise DropError("--user/--group: the serving process must not be root")
        return cls(uid, gid, f"{user}:{group}")


def drop(identity: Identity, keep: frozenset[int]) -> frozenset[int]:
    """Become `identity` (when root), then give up every capability but `keep` for good, set
    NoNewPrivs, the terminal and the bpf(2) commands it needs not (seccomp.py); returns the
    capabilities kept. Only while this is the process's only thread.
    Call after everything that needs privilege at open time is open (the listening socket,
    the BPF_ENABLE_STATS fd, /proc/kallsyms, tracefs mounted, the spawner started)."""
    _raise_memlock()
    needed = _bpf_needs_capability()
    if needed is not None and needed not in keep:
        log.warning(
            "this kernel refuses every bpf(2) command, map reads through held fds included, to "
            "a process without %s while kernel.unprivileged_bpf_disabled is set (kernels "
            "before ~6.0): the server keeps %s",
            capabilities.NAMES[needed],
            capabilities.NAMES[needed],
        )
        keep = keep | {needed}
    try:
        if os.geteuid() == 0:
            _switch_user(identity)
        kept = capabilities.drop(keep)
        capabilities.no_new_privs()
        seccomp.give_up_terminal()
        seccomp.install()
    except (capabilities.CapabilityError, OSError) as err:
        raise DropError(f"cannot drop privileges: {err}") from None
    if keep - kept:
        log.warning(
            "--capabilities.keep: this process never had %s",
            ", ".join(capabilities.names(keep - kept)),
        )
    return kept


def _switch_user(identity: Identity) -> None:
    # PR_SET_KEEPCAPS keeps the permitted set across the uid change (the kernel clears it
    # otherwise): --capabilities.keep survives it, and drop() still has CAP_SETPCAP to empty
    # the bounding set; drop() then gives up the rest for good.
    capabilities.keep_caps(True)
    os.setgroups([])
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    capabilities.keep_caps(False)
    capabilities.raise_effective()


def _raise_memlock() -> None:
    """Each perf ring the server maps is charged to RLIMIT_MEMLOCK past the per-user
    allowance (kernel.perf_event_mlock_kb per CPU); without CAP_IPC_LOCK past that it fails.
    Raise it as far as allowed while the capabilities are still there."""
    _, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    for wanted in (resource.RLIM_INFINITY, hard):
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (wanted, wanted))
            return
        except (ValueError, OSError):
            continue


def _bpf_needs_capability() -> int | None:
    """The capability this kernel wants for any bpf(2) command (kernels before ~6.0 with
    kernel.unprivileged_bpf_disabled set), or None: asked of a child with no capabilities."""
    from ..bpf.syscall import BPFError, Cmd, _InfoAttr, bpf

    with stops_held():
        pid = os.fork()
        if pid == 0:  # the child: single-threaded like the parent, so drop() is allowed
            code = 2
            try:
                capabilities.drop(())
                try:
                    bpf(Cmd.BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=0xFFFFFFFF))
                except BPFError as err:
                    code = 1 if err.errno == errno.EPERM else 0
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 1:
        return None
    # CAP_BPF exists from Linux 5.8; before, bpf(2) wanted CAP_SYS_ADMIN.
    bpf_cap = capabilities.NUMBERS["CAP_BPF"]
    return bpf_cap if capabilities.last_cap() >= bpf_cap else capabilities.NUMBERS["CAP_SYS_ADMIN"]
