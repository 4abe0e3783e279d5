"""Workloads with a known answer, run in a child whose comm is unique to the test."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

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
