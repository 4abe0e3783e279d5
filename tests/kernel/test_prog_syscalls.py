"""The built-in `syscalls` program: syscalls by name, against an exact workload and against
syscount-bpfcc over a window that lies between two of ours.

The counter is system-wide (no comm or pid label). The exact assertion uses a syscall nothing
else on the machine makes (sched_get_priority_max); the comparison with syscount uses a
loud workload (so the counts are far from 0) and bounds it between our counts over the inner
and the outer window, whatever the rest of the machine calls meanwhile.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable

from ..conftest import TOOL_EXIT_SECONDS, cannot_run
from . import workload

N = 23  # bcc's rule for tools: a prime number of events, matched exactly
CALLS = "bcc_syscalls_total"


def series(samples: dict, name: str, *keys: str, **match: str) -> dict[tuple[str, ...], float]:
    """{values of labels `keys`: value} of the series of `name` whose labels include `match`."""
    out: dict[tuple[str, ...], float] = {}
    for (sample, labels), value in samples.items():
        found = dict(labels)
        if sample == name and all(found.get(k) == v for k, v in match.items()):
            out[tuple(found[k] for k in keys)] = value
    return out


def delta(before: dict, after: dict) -> dict:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def syscount(*args: str) -> Callable[[], dict[str, int]]:
    """Start syscount-bpfcc system-wide; the returned function stops it and returns its table."""
    proc = subprocess.Popen(
        ["syscount-bpfcc", "-T", "1000", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "Tracing ...", printed once its probes are attached
    assert first.startswith("Tracing"), first + proc.stdout.read()

    def finish() -> dict[str, int]:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=TOOL_EXIT_SECONDS)
        return {m[0]: int(m[1]) for m in re.findall(r"^(\w+) +(\d+)$", out, re.MULTILINE)}

    return finish


def test_a_rare_syscall_counts_exactly(daemon):
    exporter = daemon("--config.names=syscalls")
    before = exporter.scrape()
    workload.run(
        workload.unique_comm(),
        f"""
        for _ in range({N}):
            os.sched_get_priority_max(os.SCHED_OTHER)
        for _ in range(19):
            try:
                os.sched_get_priority_max(-1)  # fails (EINVAL); entered all the same
            except OSError:
                pass
        """,
    )
    after = exporter.scrape()
    key = (CALLS, frozenset({("syscall", "sched_get_priority_max")}))
    assert after[key] - before.get(key, 0) == N + 19


LOUD = 100_003  # getppid calls: far above what the rest of the machine makes


def test_counts_match_syscount_on_the_same_window(daemon):
    if shutil.which("syscount-bpfcc") is None:
        cannot_run("no syscount-bpfcc (Debian's bpfcc-tools) to compare with")
    exporter = daemon("--config.names=syscalls")
    outside = exporter.scrape()
    theirs = syscount()
    before = exporter.scrape()
    workload.run(
        workload.unique_comm(),
        f"""
        for _ in range({LOUD}):
            os.getppid()
        for _ in range({N}):
            os.sched_get_priority_max(os.SCHED_OTHER)
        """,
    )
    after = exporter.scrape()
    table = theirs()
    past = exporter.scrape()
    ours = delta(series(before, CALLS, "syscall"), series(after, CALLS, "syscall"))
    outer = delta(series(outside, CALLS, "syscall"), series(past, CALLS, "syscall"))
    # syscount's window (attach to SIGINT) lies between an inner pair of scrapes and an outer
    # one. For calls that do not block, syscount counting at sys_exit and we at sys_enter is
    # the same, but for the calls in flight while a scrape read the map: at most one per CPU.
    ncpu = os.cpu_count() or 1
    getppid = ours[("getppid",)]
    assert LOUD <= getppid <= table["getppid"] <= outer[("getppid",)] + ncpu, (ours, outer)
    assert ours[("sched_get_priority_max",)] == table["sched_get_priority_max"] == N
