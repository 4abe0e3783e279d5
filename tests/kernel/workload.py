"""Workloads with a known answer, run in a child whose comm is unique to the test."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable

PRELUDE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME: what bpf_get_current_comm sees
"""


def unique_comm() -> str:
    """A comm no other process on the machine has, so its series counts only our workload."""
    return "bccx" + uuid.uuid4().hex[:11]


def run(comm: str, body: str, *args: str) -> str:
    """Run `body` (Python) in a child process named `comm`; everything after the prelude counts.

    Returns what the child printed."""
    assert len(comm) <= 15, "comm is truncated to 15 bytes by the kernel"
    code = PRELUDE + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", code, comm, *args],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    return done.stdout


def bpftrace(script: str) -> Callable[[], str]:
    """Start bpftrace on `script` and return once it is attached; the returned function stops
    it with SIGINT, as a user does, and returns what it printed (its maps)."""
    proc = subprocess.Popen(
        ["bpftrace", "-e", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    # It warns about RLIMIT_MEMLOCK on kernels that account BPF memory by cgroup; wait for
    # "Attaching N probes...", which it prints once attached.
    seen: list[str] = []
    while not (line := proc.stdout.readline()).startswith("Attaching"):
        assert line, f"bpftrace did not attach: {''.join(seen)}"
        seen.append(line)

    def finish() -> str:
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=30)[0]

    return finish
