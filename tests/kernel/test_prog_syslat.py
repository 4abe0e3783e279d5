"""The built-in `syslat` program: syscall latency histograms by syscall, fed by calls of known
length, and compared with syscount-bpfcc -L on the same window.

The histogram is system-wide (no comm or pid label). rt_sigtimedwait, which nothing else on the
machine calls, is counted exactly, each call in the buckets its timeout and its measured length
allow; clock_nanosleep, which every sleeping process calls, only from below.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess

from ..conftest import TOOL_EXIT_SECONDS, cannot_run
from . import workload

SLEEPS = 23  # bcc's rule for tools: a prime number of events
WAITS = 19
LENGTH = 0.010
NAME = "bcc_syscall_latency_seconds"
# 10 ms = 10 000 000 ns: bpf_log2l gives slot 24 (2^23 <= ns < 2^24), exported as le=2^24 ns.
LE, LE_BELOW = "0.016777216", "0.008388608"


def histogram(samples: dict, syscall: str) -> dict[str, float]:
    """{le or "sum" or "count": value} of one syscall's histogram."""
    out = {}
    for (name, labels), value in samples.items():
        found = dict(labels)
        if found.get("syscall") != syscall:
            continue
        if name == NAME + "_bucket":
            out[found["le"]] = value
        elif name in (NAME + "_sum", NAME + "_count"):
            out[name.rsplit("_", 1)[1]] = value
    return out


def rise(before: dict, after: dict, syscall: str) -> dict[str, float]:
    old = histogram(before, syscall)
    return {k: v - old.get(k, 0.0) for k, v in histogram(after, syscall).items()}


def syscount_latency(syscall: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["syscount-bpfcc", "-L", "--syscall", syscall],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # printed once attached
    assert first.startswith("Tracing"), first + proc.stdout.read()
    return proc


def test_timed_waits_land_in_their_bucket_and_match_syscount(daemon):
    exporter = daemon("--config.names=syslat")
    if shutil.which("syscount-bpfcc") is None:
        cannot_run("no syscount-bpfcc (Debian's bpfcc-tools) to compare with")
    theirs = syscount_latency("rt_sigtimedwait")
    before = exporter.scrape()
    printed = workload.run(
        workload.unique_comm(),
        f"""
        import signal, time
        for _ in range({SLEEPS}):
            time.sleep({LENGTH})  # clock_nanosleep(2)
        for _ in range({WAITS}):
            # rt_sigtimedwait(2) for a signal that never comes: returns after the timeout.
            started = time.monotonic_ns()
            assert signal.sigtimedwait([signal.SIGUSR1], {LENGTH}) is None
            print(time.monotonic_ns() - started)
        """,
    )
    after = exporter.scrape()

    # A timed wait never ends early, and ends late by the wake-up latency, which a busy
    # machine can stretch past the bucket's 6.7 ms of headroom. So each wait's bucket is
    # known from below (its timeout) and from above (the time the workload measured around
    # the call, which contains the kernel's sys_enter -> sys_exit): for every bound,
    #     waits measured below it <= the cumulative count <= waits whose timeout is below it.
    measured = [int(line) for line in printed.split()]
    assert len(measured) == WAITS
    waits = rise(before, after, "rt_sigtimedwait")
    assert waits["+Inf"] == waits["count"] == WAITS
    bounds = [le for le in waits if le not in ("+Inf", "sum", "count")]
    for le in bounds:
        le_ns = round(float(le) * 1e9)
        least = sum(ns < le_ns for ns in measured)
        most = WAITS if le_ns > LENGTH * 1e9 else 0
        assert least <= waits[le] <= most, (le, waits)
    assert waits[LE_BELOW] == 0
    assert WAITS * LENGTH <= waits["sum"] <= sum(measured) * 1e-9
    # Buckets below the first (128 ns) and above the last (17.2 s) exist as bounds only.
    assert min(float(le) for le in bounds) == 128e-9 and max(float(le) for le in bounds) < 18

    # Other processes sleep too (the daemon's own event loop does not: it waits in
    # epoll_wait), so our sleeps are a lower bound of what lands at 10 ms or later.
    sleeps = rise(before, after, "clock_nanosleep")
    assert sleeps["+Inf"] - sleeps[LE_BELOW] >= SLEEPS
    assert sleeps["sum"] >= SLEEPS * LENGTH

    theirs.send_signal(signal.SIGINT)
    out, _ = theirs.communicate(timeout=TOOL_EXIT_SECONDS)
    found = re.search(r"^rt_sigtimedwait +(\d+) +([\d.]+)$", out, re.MULTILINE)
    assert found, out
    count, total_us = int(found[1]), float(found[2])
    assert count == WAITS
    # Both time sys_enter -> sys_exit of the same calls, reading the clock at other points
    # (raw vs classic tracepoints; measured ~1 us per call apart): no closer to each other than
    # that, but both inside what the workload measured around the calls, as ours above.
    assert WAITS * LENGTH <= total_us * 1e-6 <= sum(measured) * 1e-9, (total_us, measured)
