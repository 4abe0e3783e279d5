"""The built-in runqlat program on a known contention: two processes spinning on one CPU for
a second wait for each other, one spinning in user space (preempted on its way back to user
space: sched_switch prev_state "R"), one in the kernel reading /dev/zero (preempted in
cond_resched(): "R+").

Besides the built-in program, the daemon runs the same source compiled for each spinner alone
(-DTARGET_PID): those are matched against the scheduler's own account of that task,
/proc/PID/schedstat (times put on a CPU, time spent runnable): the count exactly whenever the
kernel handed every event of the task to the BPF programs (a witness program counts the
switches it was handed: see histograms.switch_witness). The system-wide histogram holds them.
runqlat-bpfcc, run around the same window, counts at least the spinners' waits (the kernel's
count) and at most one wait per context switch (/proc/stat's ctxt over its life).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .conftest import REPO
from .histograms import (
    SchedStat,
    bcc_log2,
    bcc_tool,
    cpu_ticks,
    delivered,
    final_schedstat,
    most_time_in,
    recursion_misses,
    scraped,
    switch_witness,
    unheld,
    wait_blocked,
)

SPIN = 1.0  # seconds the two spinners contend for one CPU
US = 1e-6
MODES = ("user", "kernel")

SPINNER = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
in_kernel = sys.argv[2] == "kernel"
zero = os.open("/dev/zero", os.O_RDONLY)
buffer = bytearray(4 << 20)
print("ready", flush=True)
until = float(sys.stdin.readline())  # held here until the test releases it
while time.monotonic() < until:
    if in_kernel:
        os.readv(zero, [buffer])  # clears 4 MiB in the kernel, calling cond_resched()
"""


def context_switches() -> int:
    """The kernel's count of context switches on all CPUs since boot (/proc/stat ctxt)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("ctxt "):
            return int(line.split()[1])
    raise AssertionError("no ctxt line in /proc/stat")


def per_spinner_config(pids: dict[str, int]) -> str:
    """The built-in runqlat, compiled once per spinner for that spinner alone; and a witness of
    their switches."""
    builtin = yaml.safe_load((REPO / "config" / "runqlat.yaml").read_text())["programs"][0]
    programs = []
    for mode, pid in pids.items():
        program = yaml.safe_load(yaml.safe_dump(builtin))
        program["name"] = f"runqlat_{mode}"
        program["source"] = str(REPO / "programs" / "runqlat.bpf.c")
        program["cflags"] = [f"-DTARGET_PID={pid}"]
        program["metrics"]["histograms"][0]["name"] = f"runqueue_latency_{mode}_seconds"
        programs.append(program)
    programs.append(switch_witness(*pids.values()))
    return yaml.safe_dump({"programs": programs})


def test_two_spinners_on_one_cpu(daemon, write_config):
    cpu = max(os.sched_getaffinity(0))
    spinners = {
        mode: subprocess.Popen(
            [sys.executable, "-c", SPINNER, str(cpu), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode in MODES
    }
    try:
        pids = {mode: proc.pid for mode, proc in spinners.items()}
        config = write_config("spinners", per_spinner_config(pids))
        exporter = daemon("--config.names=runqlat", f"--config.file={config}")
        start = {}
        for mode, proc in spinners.items():
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            wait_blocked(proc.pid)
            start[mode] = SchedStat.of(proc.pid)  # blocked: nothing changes until released
        switches, ticks = [context_switches()], [cpu_ticks()]
        with bcc_tool("/usr/sbin/runqlat-bpfcc") as tool:
            before = exporter.scrape()
            until = time.monotonic() + SPIN
            for proc in spinners.values():
                assert proc.stdin is not None
                proc.stdin.write(f"{until}\n")
                proc.stdin.close()
            released = time.monotonic()  # both woken: runnable until `until`, never blocked
            waited = {mode: final_schedstat(proc) - start[mode] for mode, proc in spinners.items()}
            after = exporter.scrape()
        switches.append(context_switches())
        ticks.append(cpu_ticks())
        for proc in spinners.values():
            assert proc.wait() == 0
    finally:
        for proc in spinners.values():
            proc.kill()
            proc.wait()

    system = scraped(before, after, "bcc_runqueue_latency_seconds")
    # The premise: they contended. From `released` to `until` both were runnable on one CPU,
    # where one runs at a time: at every moment at least one of them waited (the kernel's
    # run_delay; 10 us a wait for where its clock and ours were read).
    pcount = sum(kernel.pcount for kernel in waited.values())
    contended = sum(kernel.run_delay_ns for kernel in waited.values()) * 1e-9 + pcount * 10 * US
    assert contended >= until - released, (waited, until - released)
    stolen = most_time_in(*ticks, "steal", cpus=os.cpu_count() or 1)
    for mode, kernel in waited.items():
        program = f"runqlat_{mode}"
        missed = recursion_misses(after, program) - recursion_misses(before, program)
        ours = scraped(before, after, f"bcc_runqueue_latency_{mode}_seconds")
        # Events the kernel did not hand to the programs: switches (the witness did not get them
        # either), wakeups dropped while another BPF program ran on the CPU (the release wakes
        # the spinner through an IPI on its CPU; counted in recursion_misses). Each costs at
        # most one latency.
        on, off = delivered(before, after, pids[mode])
        lost = (kernel.pcount - on) + (kernel.pcount - off) + missed
        why = (mode, kernel, ours, on, off, missed, stolen)
        # One latency each time the scheduler put the task on a CPU (released, or its turn
        # again after a preemption): exactly, when every event reached us.
        assert kernel.pcount - lost <= ours.total <= kernel.pcount, why
        # The sum is the kernel's run_delay, up to where each side reads its clock: the kernel
        # reads the run-queue clock (updated when __schedule() starts, or earlier when a wakeup
        # asked to skip the update), we read ktime at the tracepoints; and whole-us truncation.
        # Between the two reads the kernel runs a few microseconds of code with interrupts off
        # (measured: 0.5-5.5 us per latency, of 4-12 ms latencies; allowed: 10 us each), unless
        # the hypervisor takes the vCPU away there: at most the time it took from the CPUs.
        assert ours.sum is not None
        slack = kernel.pcount * 10 * US + stolen
        assert ours.sum <= kernel.run_delay_ns * 1e-9 + slack, why
        if not lost:
            assert ours.sum >= kernel.run_delay_ns * 1e-9 - slack, why
        # Each latency lies in its bucket: slot le=2^k us holds 2^(k-1) .. 2^k - 1 us.
        low, high = ours.sum_range(US)
        assert low <= ours.sum <= high, why
        # The system-wide histogram holds the spinner's latencies, bucket by bucket, up to where
        # each program reads its clock (10 us, as above).
        assert not (gaps := unheld(system, ours, 10 * US)), (gaps, system, ours)
        assert system.total >= ours.total, (system, ours)  # the same events, every one

    # runqlat-bpfcc, attached before the spinners were released and reading its map after
    # they exited: its raw tracepoints are never skipped (ours are tracepoints for their
    # arguments: its task_struct reads go through the mismatched headers here), so it got
    # every wait of the spinners the kernel counted; and a wait ends with a context switch.
    # Counts, not the shape of the distribution: each side reads its clock at another point.
    assert "usecs" in tool.output, tool.output
    theirs = bcc_log2(tool.output, US)
    least, most = sum(kernel.pcount for kernel in waited.values()), switches[1] - switches[0]
    assert least <= theirs.total <= most, (least, theirs, most)
    assert system.total <= most, (system, most)  # ours too, over a part of that window
