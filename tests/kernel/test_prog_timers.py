"""The built-in timers program: callbacks by name, against a known workload and against bpftrace
counting the same tracepoint over a window that lies between two of ours: it holds the inner
one and the outer one holds it, exactly, callback by callback."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time

from . import workload

N = 23  # bcc's rule for tools: a prime number of events

# recv() on a socket with SO_RCVTIMEO sleeps in schedule_timeout(), which arms a timer whose
# callback is process_timeout; with nothing to receive, every call times out (EAGAIN).
RECV_TIMEOUTS = f"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 10000))  # 10 ms
for _ in range({N}):
    try:
        s.recv(1)
    except BlockingIOError:
        pass
    else:
        raise AssertionError("received something")
"""

# bpftrace counts from the moment the test process calls getppid(), and says so: its window
# then starts just before ours, though it was started (and compiled) along with the daemon.
BPFTRACE = """
tracepoint:timer:timer_start /@counting == 1/ { @[ksym(args->function)] = count(); }
tracepoint:syscalls:sys_enter_getppid /pid == %d && @counting == 0/ {
    @counting = 1;
    printf("counting\\n");
}
"""
WINDOW = 2.0  # seconds


def by_function(samples: dict) -> dict[str, float]:
    return {
        dict(labels)["function"]: value
        for (name, labels), value in samples.items()
        if name == "bcc_timers_started_total"
    }


def test_timer_callbacks_by_name(daemon):
    bpftrace = subprocess.Popen(
        ["bpftrace", "-e", BPFTRACE % os.getpid()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        exporter = daemon("--config.names=timers")  # compiles while bpftrace does
        assert bpftrace.stdout is not None
        assert "Attaching" in bpftrace.stdout.readline()
        outside = by_function(exporter.scrape())  # before bpftrace's window
        while not select.select([bpftrace.stdout], [], [], 0.05)[0]:
            os.getppid()
        assert bpftrace.stdout.readline() == "counting\n"
        # bpftrace's window started just now and ends at its SIGINT: ours lies inside it.
        before = by_function(exporter.scrape())
        started = time.monotonic()
        workload.run(workload.unique_comm(), RECV_TIMEOUTS)
        time.sleep(max(0.0, WINDOW - (time.monotonic() - started)))
        after = by_function(exporter.scrape())
    finally:
        out, err = workload.stop_bpftrace(bpftrace)
    assert bpftrace.returncode == 0, err
    past = by_function(exporter.scrape())  # after bpftrace's window
    theirs = {m[1]: int(m[2]) for m in re.finditer(r"^@\[(.+)\]: (\d+)$", out, re.M)}
    ours = {f: after[f] - before.get(f, 0) for f in after if after[f] > before.get(f, 0)}

    # Every timeout armed a process_timeout timer; other tasks arm some too (system-wide).
    assert ours["process_timeout"] >= N
    assert "unknown" not in ours
    # Both programs run on the same tracepoint hits (when the kernel skips a hit for recursion,
    # it skips every program on it), and ours counted over a part of bpftrace's window: never
    # more than bpftrace, per callback.
    for function, count in ours.items():
        assert count <= theirs.get(function, 0), (function, count, theirs.get(function))
    # The other way, exactly: bpftrace's window lies inside the one from before it started
    # counting to after it exited, so ours over that window holds all it saw, per callback.
    outer = {f: past[f] - outside.get(f, 0) for f in past}
    for function, count in theirs.items():
        assert count <= outer.get(function, 0), (function, count, outer.get(function))
