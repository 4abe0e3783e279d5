"""The built-in cpudist program on a task whose time slices are known: a SCHED_FIFO process
(no CFS task can preempt it) pinned to one CPU runs 23 busy periods of 5 ms, sleeping 1 ms
between them, and exits at the end of the last: 23 slices of 5 ms and a little.

Besides the built-in program, the daemon runs the same source compiled for that process alone
(-DTARGET_PID), matched against the scheduler's own account of it, /proc/PID/schedstat (times
put on a CPU, time on a CPU), exactly whenever the kernel handed every switch of the task to
the BPF programs (a witness program on the same tracepoint counts them: see
histograms.switch_witness). The system-wide histogram holds it. cpudist-bpfcc cannot run here
to compare with: it attaches a kprobe to finish_task_switch, and this kernel has none.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import yaml

from .conftest import REPO
from .histograms import (
    SchedStat,
    cpu_ticks,
    delivered,
    final_schedstat,
    most_time_in,
    scraped,
    switch_witness,
    unheld,
    wait_blocked,
)

N = 23  # bcc's rule for tools: a prime number of events, matched exactly
BUSY = 0.005  # seconds on the CPU per slice: bpf_log2l slot 13 (4096 .. 8191 us)
US = 1e-6

WORKLOAD = f"""
import os, sys, time
os.sched_setaffinity(0, {{int(sys.argv[1])}})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
print("ready", flush=True)
sys.stdin.readline()  # held here until the test releases it
for i in range({N}):
    end = time.perf_counter() + {BUSY}
    while time.perf_counter() < end:
        pass
    if i < {N} - 1:
        time.sleep(0.001)
os._exit(0)  # the last slice ends here, without the interpreter's teardown
"""


def per_task_config(pid: int) -> str:
    """The built-in cpudist, compiled for one task alone; and a witness of its switches."""
    program = yaml.safe_load((REPO / "config" / "cpudist.yaml").read_text())["programs"][0]
    program["name"] = "cpudist_task"
    program["source"] = str(REPO / "programs" / "cpudist.bpf.c")
    program["cflags"] = [f"-DTARGET_PID={pid}"]
    program["metrics"]["histograms"][0]["name"] = "oncpu_time_task_seconds"
    return yaml.safe_dump({"programs": [program, switch_witness(pid)]})


def test_fifo_task_slices(daemon, write_config):
    cpu = max(os.sched_getaffinity(0))
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD, str(cpu)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        config = write_config("task", per_task_config(proc.pid))
        exporter = daemon("--config.names=cpudist", f"--config.file={config}")
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n", proc.stderr
        wait_blocked(proc.pid)
        start = SchedStat.of(proc.pid)  # blocked: nothing changes until released
        ticks = [cpu_ticks(cpu)]
        before = exporter.scrape()
        released = time.monotonic()
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
        ran = final_schedstat(proc) - start
        lifetime = time.monotonic() - released
        ticks.append(cpu_ticks(cpu))
        after = exporter.scrape()
        assert proc.wait() == 0
    finally:
        proc.kill()
        proc.wait()

    ours = scraped(before, after, "bcc_oncpu_time_task_seconds")
    # Switches the kernel did not hand to the programs (the witness did not get them either):
    # each costs at most one slice.
    on, off = delivered(before, after, proc.pid)
    lost = (ran.pcount - on) + (ran.pcount - off)
    why = (ran, ours, on, off)
    # The kernel put it on a CPU N times: released, then after each sleep; each busy period
    # was one slice, ending at the next sleep or at exit. SCHED_FIFO keeps CFS tasks out, but
    # not the deadline server that gives them a share (or the stop class): a preemption splits
    # a busy period into two slices, and the kernel counts one more time put on a CPU. And a
    # 1 ms sleep whose timer fires before the task has left the CPU never leaves it: two busy
    # periods in one slice (~10 ms), one time fewer.
    split = max(ran.pcount - N, 0)
    merged = max(N - ran.pcount, 0)
    # One slice each time it was put on a CPU: exactly, when every switch reached us.
    assert ran.pcount - lost <= ours.total <= ran.pcount, why
    # Each whole busy period is the 5 ms spin and the microseconds around it: le = 8.192 ms.
    assert N - split - 2 * merged - lost <= ours.counts[8192 * US] <= N, why
    if not split and not merged and not lost:
        assert ours.counts[8192 * US] == ours.total == N, why
    # The slices add up to at least the whole busy periods, at most to its time alive; and to the
    # kernel's time on a CPU, up to where each side reads its clock: the kernel's slice starts
    # with the run-queue clock of the wakeup that preempted for it (earlier than our
    # sched_switch by a few microseconds of code with interrupts off: allowed 10 us a slice),
    # and leaves out the time in interrupts and the time the hypervisor took the vCPU away,
    # which /proc/stat counts for the CPU. Measured: 0.2-1.4 ms apart in 116 ms.
    assert ours.sum is not None
    assert max(N - split - lost, 0) * BUSY <= ours.sum <= lifetime, why
    if not lost:
        away = most_time_in(*ticks, "irq", "softirq", "steal")
        apart = ran.pcount * 10 * US + away
        assert abs(ours.sum - ran.exec_ns * 1e-9) <= apart, (*why, away)
    low, high = ours.sum_range(US)
    assert low <= ours.sum <= high, why

    # The system-wide histogram holds the task's slices, bucket by bucket, up to where each
    # program reads its clock (the programs attached before it run first: 10 us a slice).
    system = scraped(before, after, "bcc_oncpu_time_seconds")
    assert not (gaps := unheld(system, ours, 10 * US)), (gaps, system, ours)
    assert system.total >= ours.total, (system, ours)  # the same events, every one
    assert system.sum is not None and system.sum >= ours.sum - ours.total * 10 * US
