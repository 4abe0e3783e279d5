"""Target 1: kernel overhead per event of the built-in programs, against the empty-program floor
and bpftrace's equivalent one-liner; and every default program's in-kernel run time."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from .common import (
    BenchDaemon,
    Options,
    Section,
    Table,
    compile_workloads,
    daemon,
    median,
    require,
    verdict,
    wait_complete,
)

FLOOR_TARGET = 1.15  # ours ≤ 1.15 × the empty program's cost
PEER_TARGET = 0.4  # ours ≤ 0.4 × bpftrace's cost

RUNQLAT_BT = """
tracepoint:sched:sched_wakeup, tracepoint:sched:sched_wakeup_new { @qtime[args->pid] = nsecs; }
tracepoint:sched:sched_switch {
    if (args->prev_state == 0) { @qtime[args->prev_pid] = nsecs; }
    $ns = @qtime[args->next_pid];
    if ($ns) { @usecs = hist((nsecs - $ns) / 1000); }
    delete(@qtime[args->next_pid]);
}
"""

CPUDIST_BT = """
tracepoint:sched:sched_switch {
    if (@start[args->prev_pid]) {
        @usecs = hist((nsecs - @start[args->prev_pid]) / 1000);
        delete(@start[args->prev_pid]);
    }
    if (args->next_pid) { @start[args->next_pid] = nsecs; }
}
"""

SCHED_FLOOR = """
TRACEPOINT_PROBE(sched, sched_switch) { return 0; }
TRACEPOINT_PROBE(sched, sched_wakeup) { return 0; }
TRACEPOINT_PROBE(sched, sched_wakeup_new) { return 0; }
"""


@dataclass(frozen=True)
class Case:
    program: str  # the built-in program, run by the daemon with --config.names=PROGRAM
    workload: str  # a mode of bench/loops.c
    unit: str  # what one operation of the workload is
    ops: int  # operations per run
    floor: str  # BCC C: empty programs on the probes our program's hot path uses
    bpftrace: str  # the peer: bpftrace doing the same job
    targeted: bool  # the issue sets targets for it


CASES = [
    Case(
        "syscalls",
        "getpid",
        "getpid(2)",
        2_000_000,
        "RAW_TRACEPOINT_PROBE(sys_enter) { return 0; }",
        "tracepoint:raw_syscalls:sys_enter { @[args->id] = count(); }",
        True,
    ),
    Case(
        "opens",
        "openat",
        "openat(2), ENOENT",
        1_000_000,
        "TRACEPOINT_PROBE(syscalls, sys_exit_openat) { return 0; }",
        "tracepoint:syscalls:sys_exit_openat { @[comm, args->ret] = count(); }",
        True,
    ),
    Case("runqlat", "pingpong", "context switch", 200_000, SCHED_FLOOR, RUNQLAT_BT, True),
    Case(
        "cpudist",
        "pingpong",
        "context switch",
        200_000,
        "RAW_TRACEPOINT_PROBE(sched_switch) { return 0; }",  # as cpudist attaches
        CPUDIST_BT,
        False,
    ),
    Case(
        "syscall_errors",
        "getpid",
        "getpid(2) (never fails)",
        2_000_000,
        "TRACEPOINT_PROBE(raw_syscalls, sys_exit) { return 0; }",
        "tracepoint:raw_syscalls:sys_exit /args->ret < 0/ { @[args->id, args->ret] = count(); }",
        False,
    ),
]

# What is attached while the workload runs. The kernel's BPF run-time stats stay off (the
# daemon turns them on only with --bpf.stats): they cost every run of every BPF program.
VARIANTS = ["nothing", "floor", "ours", "bpftrace"]


def run(opts: Options) -> list[Section]:
    loops = compile_workloads(opts)
    cpu = max(os.sched_getaffinity(0))
    rounds = opts.pick(5, 1)
    samples: dict[tuple[str, str], list[float]] = {}
    # Interleaved: a round measures every case and variant once, so drifting background
    # load hits them all alike; the figure is each one's median over the rounds.
    cases = CASES[:1] if opts.quick else CASES
    for _ in range(rounds):
        for case in cases:
            ops = opts.pick(case.ops, case.ops // 100)
            for variant in VARIANTS:
                with attached(opts, case, variant):
                    ns = measure(loops, case.workload, ops, cpu)
                samples.setdefault((case.program, variant), []).append(ns)
    return [overhead_section(cases, samples, rounds, cpu), run_time_section(opts, loops, cpu)]


def measure(loops: Path, workload: str, ops: int, cpu: int) -> float:
    out = subprocess.run(
        [str(loops), workload, str(ops), str(cpu)], check=True, capture_output=True, text=True
    )
    return float(out.stdout)


def attached(opts: Options, case: Case, variant: str) -> AbstractContextManager[object]:
    makers: dict[str, Callable[[], AbstractContextManager[object]]] = {
        "nothing": nullcontext,
        "floor": lambda: bcc_program(case.floor),
        "ours": lambda: our_program(opts, case.program),
        "bpftrace": lambda: bpftrace(opts, case.bpftrace),
    }
    return makers[variant]()


@contextmanager
def bcc_program(text: str) -> Iterator[None]:
    from bcc import BPF  # only here: the rest of the bench (and the daemon) never maps LLVM

    bpf = BPF(text=text)
    try:
        yield
    finally:
        bpf.cleanup()


@contextmanager
def our_program(opts: Options, program: str) -> Iterator[None]:
    with daemon(opts, f"events-{program}", f"--config.names={program}", "--log.level=warn") as d:
        wait_complete(d, [program])
        yield


@contextmanager
def bpftrace(opts: Options, script: str) -> Iterator[None]:
    proc = subprocess.Popen(
        [require("bpftrace"), "-e", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Attaching N probes...", printed before attaching
        if not line.startswith("Attaching"):
            raise RuntimeError(f"bpftrace did not start: {line}{proc.communicate()[1]}")
        time.sleep(opts.pick(1, 0.3))
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)  # it prints its maps on the way out


def overhead_section(
    cases: list[Case], samples: dict[tuple[str, str], list[float]], rounds: int, cpu: int
) -> Section:
    section = Section(
        "Kernel overhead per event",
        f"`bench/loops.c` pinned to CPU {cpu}, CPU time per operation (the BPF programs run in "
        "the workload's context and count; time other processes take does not), median of "
        f"{rounds} interleaved runs of each variant: nothing attached; the floor, empty BCC "
        "programs on the same probes; our program as the daemon "
        "attaches it (`--config.names=PROGRAM`, so exactly what we ship); bpftrace 0.17's "
        "equivalent one-liner. *Added* is ns per operation above nothing attached; ratios are "
        "of added costs.",
        [],
    )
    table = Table(
        [
            "program (workload)",
            "nothing",
            "floor added",
            "ours added",
            "bpftrace added",
            f"ours ÷ floor (≤ {FLOOR_TARGET})",
            f"ours ÷ bpftrace (≤ {PEER_TARGET})",
            "result",
        ]
    )
    raw = Table(["program", *VARIANTS])
    for case in cases:
        m = {v: median(samples[case.program, v]) for v in VARIANTS}
        added = {v: m[v] - m["nothing"] for v in VARIANTS}
        vs_floor = added["ours"] / added["floor"] if added["floor"] > 0 else float("inf")
        vs_peer = added["ours"] / added["bpftrace"] if added["bpftrace"] > 0 else float("inf")
        result = "no target"
        if case.targeted:
            result = verdict(section, vs_floor <= FLOOR_TARGET and vs_peer <= PEER_TARGET)
        table.rows.append(
            [
                f"`{case.program}` ({case.unit})",
                f"{m['nothing']:.0f} ns",
                *(f"{added[v]:+.0f} ns" for v in VARIANTS[1:]),
                f"{vs_floor:.2f}",
                f"{vs_peer:.2f}",
                result,
            ]
        )
        raw.rows.append(
            [case.program]
            + [" ".join(f"{s:.0f}" for s in samples[case.program, v]) for v in VARIANTS]
        )
    section.tables = [table, raw]
    section.notes.append(
        "The second table is every run in ns per operation (the spread shows the noise)."
    )
    return section


def run_time_section(opts: Options, loops: Path, cpu: int) -> Section:
    """The kernel's own account (BPF_ENABLE_STATS, --bpf.stats) of every default program: cost
    per run, inside the program only (the tracepoint's price is on top)."""
    programs, config = opts.programs, opts.config
    with daemon(opts, "events-default", *config, "--bpf.stats") as d:
        wait_complete(d, programs)
        before, started = run_stats(d), time.monotonic()
        for workload in ("getpid", "openat", "pingpong"):
            measure(loops, workload, opts.pick(200_000, 2_000), cpu)
        time.sleep(max(0.0, opts.pick(10, 1) - (time.monotonic() - started)))
        after, window = run_stats(d), time.monotonic() - started
    table = Table(["program", "function", "runs/s", "ns per run"])
    for key in sorted(after):
        runs = after[key][0] - before.get(key, (0, 0))[0]
        seconds = after[key][1] - before.get(key, (0, 0))[1]
        table.rows.append(
            [
                f"`{key[0]}`",
                f"`{key[1]}`",
                f"{runs / window:,.0f}",
                f"{seconds / runs * 1e9:.0f}" if runs else "–",
            ]
        )
    return Section(
        "In-kernel run time of every default program",
        f"The default config, {window:.0f} s with the three workloads above run once each and the "
        "machine's own activity; `bcc_exporter_program_run_seconds_total` ÷ "
        "`..._run_count_total` deltas with `--bpf.stats` (the kernel's BPF_ENABLE_STATS "
        "account of time inside each program; the tracepoint's own price is on top). "
        "No targets.",
        [table],
    )


def run_stats(d: BenchDaemon) -> dict[tuple[str, str], tuple[float, float]]:
    """(program, function) -> (run count, run seconds), summed over program ids."""
    stats: dict[tuple[str, str], tuple[float, float]] = {}
    for (name, labels), value in d.scrape().items():
        if name not in (
            "bcc_exporter_program_run_count_total",
            "bcc_exporter_program_run_seconds_total",
        ):
            continue
        label = dict(labels)
        key = (label["program"], label["function"])
        count, seconds = stats.get(key, (0.0, 0.0))
        if name.endswith("count_total"):
            count += value
        else:
            seconds += value
        stats[key] = (count, seconds)
    return stats
