"""Histograms side by side: scraped from the daemon (the delta between two scrapes) and printed
by a bcc tool run over the same window; and the kernel's own per-task scheduler account."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..conftest import TOOL_EXIT_SECONDS

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Hist:
    """Counts of one histogram by bucket upper bound (`le`, in exported units), not cumulative:
    `counts[le]` holds what lies between the bound below and `le` (`math.inf`: above all)."""

    counts: dict[float, float]
    sum: float | None = None

    @property
    def total(self) -> float:
        return sum(self.counts.values())

    def between(self, low: float, high: float) -> float:
        """Observations in the buckets with low < le <= high."""
        return sum(n for le, n in self.counts.items() if low < le <= high)

    def cdf(self, le: float) -> float:
        return self.between(-math.inf, le) / self.total if self.total else 0.0

    def sum_range(self, unit: float) -> tuple[float, float]:
        """The least and the most the observations can add up to, by their exp2 buckets: the
        bucket le = 2^k units holds whole values 2^(k-1) .. 2^k - 1 (le = 2 units: 0 and 1),
        the first bucket exported also everything below it."""
        finite = sorted(le for le in self.counts if le != math.inf)
        low = sum(self.counts[le] * le / 2 for le in finite[1:] if le > 2 * unit)
        low += self.counts.get(math.inf, 0) * finite[-1]
        high = sum(self.counts[le] * (le - unit) for le in finite)
        high += math.inf if self.counts.get(math.inf) else 0
        return low, high

    def median_le(self) -> float:
        """The bound of the bucket that holds the median."""
        return min(le for le in self.counts if self.cdf(le) >= 0.5)


def unheld(whole: Hist, part: Hist, apart: float) -> list[tuple[float, str, float, float]]:
    """Where the histogram of `whole` fails to hold the observations of `part`: the same events
    measured by two programs, each reading the clock when its turn comes at a tracepoint (after
    the programs attached before it), so that each pair of values may differ by up to `apart`,
    enough to cross a bucket bound (seen: a task's 16-32 us run-queue latency in another bucket
    of the system-wide program, in 1 run of 4, with a plain-hash copy of that program agreeing
    with it). Each value of `part` at most `le` is one of `whole` at most le + apart, and each
    above `le` one of `whole` above le - apart; the bounds where the counts say otherwise are
    returned, with the two counts."""
    bounds = sorted(whole.counts)
    failed = []
    for le in sorted(part.counts):
        up = min((b for b in bounds if b >= le + apart), default=math.inf)
        down = max((b for b in bounds if b <= le - apart), default=-math.inf)
        at_most = part.between(-math.inf, le)
        above = part.total - at_most
        whole_at_most = whole.between(-math.inf, up)
        whole_above = whole.total - whole.between(-math.inf, down)
        if at_most > whole_at_most:
            failed.append((le, "at most", at_most, whole_at_most))
        if above > whole_above:
            failed.append((le, "above", above, whole_above))
    return failed


def sum_held(part: Hist, around: Hist, ncpu: int, window: float, unit: float) -> bool:
    """Whether the time summed in `part` (scraped before and after a window of `window` seconds)
    fits the counts of `around` (scraped right before and after those two), for handlers that
    do not nest on a CPU (softirqs, hardirqs). A scrape reads the bucket keys and the sum key at
    different moments: a call ending between the reads is in the counts and not in the sum, or
    the other way round (a handler called once in the window: sum 0 below its bucket's least).
    So every call in `part`'s sum is in `around`'s counts, and every one in `part`'s counts in
    `around`'s sum; each duration lies in its bucket. And the time cannot exceed the CPUs' time
    over the window, but for the part before it of the call running then on each CPU, at most
    the widest bucket `around` counted."""
    assert part.sum is not None and around.sum is not None, (part, around)
    longest = max((le for le, n in around.counts.items() if n), default=0.0)
    return (
        0 <= part.sum <= around.sum_range(unit)[1]
        and around.sum >= part.sum_range(unit)[0]
        and part.sum <= ncpu * (window + longest)
    )


def scraped(before: Samples, after: Samples, name: str, **labels: str) -> Hist:
    """What histogram `name` (with these labels, beside `le`) gained between two scrapes."""

    def cumulative(samples: Samples) -> dict[float, float]:
        out = {}
        for (sample, sample_labels), value in samples.items():
            found = dict(sample_labels)
            le = found.pop("le", None)
            if sample == name + "_bucket" and found == labels and le is not None:
                out[float(le)] = value
        return out

    then, now = cumulative(before), cumulative(after)
    counts, below = {}, 0.0
    for le in sorted(now):
        gained = now[le] - then.get(le, 0.0)
        counts[le] = gained - below
        below = gained
    key = (name + "_sum", frozenset(labels.items()))
    total = after[key] - before.get(key, 0.0) if key in after else None
    return Hist(counts, total)


def recursion_misses(samples: Samples, program: str) -> float:
    """Events the kernel did not run the program's functions for, so far: a classic tracepoint
    that fires while another BPF program (or a bpf(2) map operation) is active on the same CPU,
    say a wakeup from an interrupt that came in the middle of one, is dropped and counted in
    bpf_prog_info.recursion_misses, which the daemon exports."""
    name = "bcc_exporter_program_recursion_misses_total"
    found = [v for (n, ls), v in samples.items() if n == name and ("program", program) in ls]
    assert found, f"no {name} for {program}"
    return sum(found)


def series(samples: Samples, name: str, label: str) -> set[str]:
    """The values of `label` among the samples of `name`."""
    return {dict(labels)[label] for sample, labels in samples if sample == name}


# A row of bcc's print_log2_hist: "     2048 -> 4095       : 131      |*****     |"
LOG2_ROW = re.compile(r"^\s*(\d+) -> (\d+)\s*: (\d+)", re.M)


def bcc_log2(text: str, unit: float) -> Hist:
    """A histogram printed by a bcc tool. The row "lo -> hi" is bpf_log2l slot k, which holds
    values up to hi = 2^k - 1: the daemon exports it as le = 2^k units."""
    return Hist({(int(hi) + 1) * unit: int(n) for _, hi, n in LOG2_ROW.findall(text)})


def ks_distance(a: Hist, b: Hist) -> float:
    """The largest difference between the cumulative fractions of two histograms, at the bounds
    both have (the daemon's first bucket also holds what lies below it)."""
    return max(abs(a.cdf(le) - b.cdf(le)) for le in set(a.counts) & set(b.counts))


@dataclass
class ToolRun:
    output: str = ""
    errors: str = ""
    args: list[str] = field(default_factory=list)


@contextmanager
def bcc_tool(*args: str) -> Iterator[ToolRun]:
    """Run a bcc tool from the moment it has attached (its "Tracing ..." line) to the end of the
    block, then stop it with SIGINT, as a user does, and keep what it printed."""
    run = ToolRun(args=list(args))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if "Tracing" not in first:
            proc.kill()
            raise AssertionError(f"{args[0]} did not start: {first}{proc.communicate()[1]}")
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        run.output, run.errors = proc.communicate(timeout=TOOL_EXIT_SECONDS)
    assert proc.returncode == 0, f"{args[0]} exited {proc.returncode}: {run.errors}"


def timed_sleep(seconds: float) -> float:
    """time.sleep() (clock_nanosleep(2)), returning how long it took around the call: at least
    what the kernel measures from sys_enter to sys_exit."""
    started = time.monotonic()
    time.sleep(seconds)
    return time.monotonic() - started


@dataclass(frozen=True)
class SchedStat:
    """/proc/PID/schedstat: what the scheduler itself accounted for a task (CONFIG_SCHED_INFO)."""

    exec_ns: int  # time on a CPU
    run_delay_ns: int  # time runnable, waiting for a CPU
    pcount: int  # times it was put on a CPU

    @classmethod
    def of(cls, pid: int) -> SchedStat:
        exec_ns, run_delay_ns, pcount = Path(f"/proc/{pid}/schedstat").read_text().split()
        return cls(int(exec_ns), int(run_delay_ns), int(pcount))

    def __sub__(self, other: SchedStat) -> SchedStat:
        return SchedStat(
            self.exec_ns - other.exec_ns,
            self.run_delay_ns - other.run_delay_ns,
            self.pcount - other.pcount,
        )


# /proc/stat's columns of CPU time, in ticks of 1/CLK_TCK s.
CPU_TIMES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
TICK = 1 / os.sysconf("SC_CLK_TCK")


def cpu_ticks(cpu: int | None = None) -> dict[str, int]:
    """/proc/stat: the time one CPU (all CPUs: None) spent in each state since boot."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == name:
            return dict(zip(CPU_TIMES, map(int, fields[1:]), strict=False))
    raise AssertionError(f"no {name} line in /proc/stat")


def most_time_in(
    before: dict[str, int], after: dict[str, int], *states: str, cpus: int = 1
) -> float:
    """The most seconds spent in these states between two reads of cpu_ticks() of `cpus` CPUs:
    the kernel counts nanoseconds and prints whole ticks, so each CPU's count may lag by one."""
    return sum(after[s] - before[s] + cpus for s in states) * TICK


SWITCH_WITNESS = """
name: switches
cflags: ["-DPID_A=%d", "-DPID_B=%d"]
code: |
  struct key { u32 pid; u32 way; };
  BPF_HASH(switches, struct key, u64, 16);
  TRACEPOINT_PROBE(sched, sched_switch) {
      struct key key = {};
      if (args->next_pid == PID_A || args->next_pid == PID_B) {
          key.pid = args->next_pid;  // put on a CPU
          switches.atomic_increment(key);
      }
      if (args->prev_pid == PID_A || args->prev_pid == PID_B) {
          key.pid = args->prev_pid;
          key.way = 1;  // taken off it
          switches.atomic_increment(key);
      }
      return 0;
  }
metrics:
  counters:
    - name: test_switches_total
      help: sched_switch events of the test's tasks, as the kernel handed them to BPF programs.
      map: switches
      labels:
        - {name: pid, size: 4, decoders: [{name: uint}]}
        - name: way
          size: 4
          decoders: [{name: uint}, {name: static_map, static_map: {0: "on", 1: "off"}}]
"""


def switch_witness(*pids: int) -> dict[str, Any]:
    """A program counting the sched_switch events of one or two tasks as the kernel handed them
    to BPF programs: attached beside the program under test, on the same tracepoint, it gets
    exactly the events that program got. The kernel can drop classic tracepoint events without
    counting them anywhere (seen here: 2 or 3 of a task's 23 switches onto a CPU lost in one
    window, for every program on sched_switch at once, in about 1 run of 10 while other test
    suites were loading programs); the witness tells such a window from a bug in the program."""
    a, b = (*pids, pids[0])[:2]
    return dict(yaml.safe_load(SWITCH_WITNESS % (a, b)))


def delivered(before: Samples, after: Samples, pid: int) -> tuple[float, float]:
    """(switches onto a CPU, switches off it) of `pid` the witness saw between two scrapes."""

    def way(w: str) -> float:
        key = ("bcc_test_switches_total", frozenset({("pid", str(pid)), ("way", w)}))
        return after.get(key, 0.0) - before.get(key, 0.0)

    return way("on"), way("off")


def wait_blocked(pid: int, timeout: float = 10) -> None:
    """Wait until a task sleeps (state S): it is blocked where the test holds it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # /proc/PID/stat: "pid (comm) S ..."; comm may hold spaces and parentheses.
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "S":
            return
        time.sleep(0.01)
    raise AssertionError(f"task {pid} did not block within {timeout} s")


def final_schedstat(proc: subprocess.Popen[str], timeout: float = 10) -> SchedStat:
    """The scheduler's account of a child over its whole life: read once it has exited but
    before it is reaped (a zombie keeps its task struct), so nothing it did is missed.

    The parent is told of the exit before the child's last switch off its CPU (exit_notify()
    comes before the final schedule()), and a scrape taken in between would miss that switch
    in one program's map and see it in the next one's. So this also waits for the last switch:
    the kernel counts each switch off a CPU (voluntary_ctxt_switches + nonvoluntary_ctxt_switches
    in /proc/PID/status, right before the sched_switch tracepoint) and each time put on one
    (pcount): once the two are equal, the programs on that tracepoint are microseconds away
    from having run for the last switch, and a scrape is further away than that."""
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    deadline = time.monotonic() + timeout
    while True:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        switched_off = sum(
            int(line.split()[1])
            for line in status.splitlines()
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"))
        )
        stat = SchedStat.of(proc.pid)
        if switched_off == stat.pcount:
            return stat
        if time.monotonic() > deadline:
            raise AssertionError(
                f"task {proc.pid} put on a CPU {stat.pcount} times, switched off {switched_off}"
            )
        time.sleep(0.001)
