"""The built-in profile program: a busy process of a unique comm gets ~49 samples per CPU-second
it ran, and profile-bpfcc, sampling at the same rate over the same run, agrees."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ..conftest import TOOL_EXIT_SECONDS
from . import workload
from .histograms import cpu_ticks, most_time_in

HZ = 49


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
        while workload.perf_event_fds(profile.pid) < os.cpu_count():  # type: ignore[operator]
            assert profile.poll() is None, profile.communicate()[1]
            assert time.monotonic() < deadline, "profile-bpfcc did not attach"
            time.sleep(0.05)
        comm = workload.unique_comm()
        cpu = max(os.sched_getaffinity(0))
        ticks = [cpu_ticks(cpu)]
        printed = workload.run(comm, workload.busy_second(cpu))
        ticks.append(cpu_ticks(cpu))
    finally:
        profile.send_signal(signal.SIGINT)
        out, err = profile.communicate(timeout=TOOL_EXIT_SECONDS)
    ours = exporter.value("bcc_cpu_samples_total", comm=comm)
    theirs = sum(int(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith(comm))

    # A 49 Hz cpu-clock sample lands in whatever runs on that CPU: 49 per second the child
    # ran, within what its breaks and its CPU's interrupts and stolen time allow.
    least, most = workload.sampled(HZ, printed, most_time_in(*ticks, "irq", "softirq", "steal"))
    assert least <= ours <= most, (least, ours, most, printed)
    # profile-bpfcc, its own perf events at the same rate over the same run: the same.
    assert least <= theirs <= most, (least, theirs, most, printed, err)
