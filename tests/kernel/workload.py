"""Workloads with a known answer, run in a child whose comm is unique to the test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ..conftest import TOOL_EXIT_SECONDS, bpftool_show

PRELUDE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME: what bpf_get_current_comm sees
"""


COMM_PREFIX = "bccx"  # every comm of unique_comm(): a program can count these alone


def unique_comm() -> str:
    """A comm no other process on the machine has, so its series counts only our workload."""
    return COMM_PREFIX + uuid.uuid4().hex[:11]


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


def perf_event_fds(pid: int) -> int:
    """The perf events the process holds open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            count += os.readlink(fd) == "anon_inode:[perf_event]"
    return count


def bpftrace(script: str, probes: int = 1, perf_events: int = 0) -> Callable[[], str]:
    """Start bpftrace on `script` and return once it is attached: `probes` of its perf events
    hold a BPF program (tracepoints, uprobes: bpftool lists those), and it holds `perf_events`
    perf events in all (its output buffer's, one per CPU, and a profile's, which bpftool does
    not list). The returned function stops it with SIGINT, as a user does, and returns what it
    printed (its maps)."""
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
    # It prints that before it attaches: a uprobe or USDT probe takes it a while more, and a
    # SIGINT meanwhile is lost (it then never exits). The kernel says when it is done.
    deadline = time.monotonic() + 60
    while (
        sum(p["pid"] == proc.pid for p in bpftool_show("perf")) < probes
        or perf_event_fds(proc.pid) < perf_events
    ):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"bpftrace did not attach: {''.join(seen)}{proc.communicate()[0]}")
        time.sleep(0.05)

    def finish() -> str:
        return stop_bpftrace(proc)[0]

    return finish


def stop_bpftrace(proc: subprocess.Popen[str]) -> tuple[str, str | None]:
    """SIGINT bpftrace, as a user stops it; what it printed (stdout, stderr).

    bpftrace 0.17 sees a SIGINT only when it interrupts the epoll_wait(2) of its event loop: one
    handled elsewhere (between two of its 100 ms waits, or while it waits for a CPU after one)
    sets a flag the loop never reads again, and it never exits (seen in 1 of 16 soak runs). So
    the signal goes while /proc says it sleeps in epoll_wait, and again each second it is still
    there. A second one is safe: until the loop and its drain (over within 100 ms of the last
    event) have returned, the handler only sets that flag; after, it no longer waits there."""
    deadline = time.monotonic() + TOOL_EXIT_SECONDS
    while True:
        waiting = time.monotonic() + 1  # not in epoll_wait: busy, or blocked on a full pipe
        while proc.poll() is None and wchan(proc.pid) != "do_epoll_wait":
            if time.monotonic() > waiting:
                break
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            return proc.communicate(timeout=1)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()  # a hung bpftrace must not outlive the test, attached
                proc.communicate()
                raise


def wchan(pid: int) -> str:
    """Where in the kernel a process sleeps ("0": running, or gone)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return "0"


# One second of busy loop in user space, pinned to one CPU at a real-time priority: nothing
# preempts it bar interrupts, the hypervisor and the RT throttle's break (the deadline server
# that gives other tasks a share). It makes no system call (perf_counter is read in the vDSO):
# a sample that fires while a BPF program another tool put on a syscall tracepoint runs on that
# CPU is dropped by the kernel (bpf_prog_active). It prints its CPU time and how many times it
# was put back on the CPU meanwhile (/proc/self/schedstat), and exits without a teardown.
BUSY_SECOND = """
import time
os.sched_setaffinity(0, {%(cpu)d})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
def switches():
    return int(open("/proc/self/schedstat").read().split()[2])
cpu, put_on = time.process_time(), switches()
start = time.perf_counter()
while time.perf_counter() - start < 1.0:
    pass
print(time.process_time() - cpu, switches() - put_on, flush=True)
os._exit(0)
"""


def busy_second(cpu: int) -> str:
    """BUSY_SECOND's body on `cpu`: prints "CPU-seconds switches"."""
    return BUSY_SECOND % {"cpu": cpu}


def sampled(hz: int, printed: str, away: float) -> tuple[float, float]:
    """The least and the most samples a cpu-clock event at `hz` on its CPU takes of a
    busy_second() child that printed `printed`, with at most `away` seconds of that CPU spent in
    interrupts or taken by the hypervisor meanwhile (neither is in the child's CPU time). Each
    stretch the child ran without a break, of t seconds, gets hz * t samples give or take one;
    it ran in one stretch more than the times it was put back on the CPU."""
    cpu_seconds, switches = printed.split()
    stretches = int(switches) + 1
    expected = hz * float(cpu_seconds)
    return expected - stretches - hz * away, expected + stretches + hz * away
