"""The built-in `runqlat_by_pod` program: a process in a pod's container cgroup (a real cgroup v2
directory in the cgroupfs driver's layout, the kubelet's log directories in a temp root) sleeps
a known number of times; its pod's histogram holds one latency each time the scheduler put it
back on a CPU (the scheduler's own account of the task, /proc/PID/schedstat, as in
test_prog_runqlat), and the same latencies the built-in runqlat measures for that one task.

This proves the program's way to the cgroup of the task that waited (counted when it leaves the
CPU, in its own context): every latency of the task, and none of another task, lands in its
pod's series. The sum is compared with runqlat's, not with the kernel's run_delay: waking on an
idle CPU, the kernel's run-queue clock is not read again before the task runs, so its
run_delay is ~1 us where both programs' ktime reads see the ~10 us it takes (measured).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml

from ..k8s_pods import Pod, builtin_program, directories
from .histograms import (
    SchedStat,
    delivered,
    final_schedstat,
    recursion_misses,
    scraped,
    switch_witness,
    wait_blocked,
)

N = 23  # sleeps: each ends in a wait for a CPU
US = 1e-6

SLEEPER = f"""
import sys, time
print("ready", flush=True)
sys.stdin.readline()  # held here until the test releases it
for _ in range({N}):
    time.sleep(0.001)
"""


def runqlat_of(pid: int) -> dict[str, Any]:
    """The built-in runqlat, for one task only."""
    program = builtin_program("runqlat", {})
    program["cflags"] = [f"-DTARGET_PID={pid}"]
    program["metrics"]["histograms"][0]["name"] = "runqueue_latency_target_seconds"
    return program


def test_a_pods_waits_match_the_schedulers_account(daemon, write_config, node):
    pod = Pod.make("batch", "report-28391470-q8k2m", "worker")
    node.add(pod)
    with directories(node.cgroups, pod.cgroup("cgroupfs-containerd-burstable")) as [cgroup]:
        proc = subprocess.Popen(
            [sys.executable, "-c", SLEEPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            (cgroup / "cgroup.procs").write_text(str(proc.pid))
            programs = [
                builtin_program("runqlat_by_pod", node.options),
                runqlat_of(proc.pid),
                switch_witness(proc.pid),
            ]
            config = write_config("runqlat_by_pod", yaml.safe_dump({"programs": programs}))
            exporter = daemon(f"--config.file={config}")
            wait_blocked(proc.pid)
            start = SchedStat.of(proc.pid)  # blocked: nothing changes until released
            before = exporter.scrape()
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.close()
            kernel = final_schedstat(proc) - start
            after = exporter.scrape()
            assert proc.wait() == 0
        finally:
            proc.kill()
            proc.wait()

    labels = {"namespace": pod.namespace, "pod": pod.name, "container": pod.container}
    ours = scraped(before, after, "bcc_pod_runqueue_latency_seconds", **labels)
    # Events the kernel did not hand to the program (see test_prog_runqlat): each costs at most
    # one latency; here a latency needs its task's switch off the CPU as well.
    on, off = delivered(before, after, proc.pid)
    missed = recursion_misses(after, "runqlat_by_pod") - recursion_misses(before, "runqlat_by_pod")
    # Plus its last wait, ended by the switch of its death: not counted (the program says why).
    lost = (kernel.pcount - on) + (kernel.pcount - off) + missed + 1
    why = (kernel, ours, on, off, missed)
    assert kernel.pcount >= N + 1, why  # released, then back from each sleep
    assert kernel.pcount - lost <= ours.total <= kernel.pcount, why
    # runqlat got the same events but needs no switch off the CPU to count a latency; on classic
    # tracepoints, it loses the wakeups that came while another BPF program ran on the CPU
    # (counted in its recursion_misses), where our raw tracepoints did not lose them.
    theirs = scraped(before, after, "bcc_runqueue_latency_target_seconds")
    dropped = recursion_misses(after, "runqlat") - recursion_misses(before, "runqlat")
    most = theirs.total + dropped
    assert theirs.total - (kernel.pcount - off) - 1 <= ours.total <= most, (why, theirs, dropped)
    # Each program reads the clock when its turn comes and truncates to whole us: 10 us a
    # latency apart, as in test_prog_runqlat.
    assert ours.sum is not None and theirs.sum is not None
    if ours.total == theirs.total and not dropped:
        assert abs(ours.sum - theirs.sum) <= 10 * US * ours.total, (why, theirs)
    low, high = ours.sum_range(US)
    assert low <= ours.sum <= high, why
