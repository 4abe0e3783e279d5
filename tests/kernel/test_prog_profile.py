"""The built-in profile program: a busy process of a unique comm gets ~49 samples per CPU-second
it ran, and profile-bpfcc, sampling at the same rate over the same run, agrees."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from . import workload

HZ = 49
# One second of busy loop, pinned to one CPU at a real-time priority when allowed: then nothing
# preempts it (bar interrupts and the RT throttle's one break), it runs in one or two stretches,
# and each stretch of t seconds gets 49 * t samples, give or take one. The loop makes no system
# call (perf_counter is read in the vDSO): a sample that fires while a BPF program another tool
# put on a syscall tracepoint runs on that CPU is dropped by the kernel (bpf_prog_active), and
# with a syscall in every iteration that was up to a tenth of them on a busy test machine.
BUSY = """
import time
os.sched_setaffinity(0, {int(sys.argv[2])})
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    realtime = True
except PermissionError:
    realtime = False
cpu = time.process_time()
start = time.perf_counter()
while time.perf_counter() - start < 1.0:
    pass
print(time.process_time() - cpu, realtime)
"""


def perf_event_fds(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            count += os.readlink(fd) == "anon_inode:[perf_event]"
    return count


def test_busy_process_sampled_at_49_hz(daemon):
    # Folded, kernel stacks only (nothing to symbolize in user space): "comm;stack... count".
    profile = subprocess.Popen(
        ["/usr/sbin/profile-bpfcc", "-F", str(HZ), "-f", "-K"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        exporter = daemon("--config.names=profile")  # compiles while profile-bpfcc does
        # profile-bpfcc prints nothing until it ends: it is attached once it holds a perf event
        # per CPU (it enables each as it opens it).
        deadline = time.monotonic() + 60
        while perf_event_fds(profile.pid) < os.cpu_count():  # type: ignore[operator]
            assert profile.poll() is None, profile.communicate()[1]
            assert time.monotonic() < deadline, "profile-bpfcc did not attach"
            time.sleep(0.05)
        comm = workload.unique_comm()
        cpu = max(os.sched_getaffinity(0))
        busy, realtime = workload.run(comm, BUSY, str(cpu)).split()
        cpu_seconds = float(busy)
    finally:
        profile.send_signal(signal.SIGINT)
        out, err = profile.communicate(timeout=60)
    ours = exporter.value("bcc_cpu_samples_total", comm=comm)
    theirs = sum(int(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith(comm))

    # A 49 Hz cpu-clock sample lands in whatever runs on that CPU: 49 per CPU-second the child
    # ran. Without a real-time priority the loop is preempted into many short stretches on a
    # busy machine, each of which catches a sample or not: the count wanders by several.
    expected = HZ * cpu_seconds
    slack = 3 if realtime == "True" else 0.3 * expected + 3
    assert abs(ours - expected) <= slack, (ours, cpu_seconds, realtime)
    # profile-bpfcc, its own perf events at the same rate over the same run: the same.
    assert abs(theirs - expected) <= slack, (theirs, cpu_seconds, realtime, err)
