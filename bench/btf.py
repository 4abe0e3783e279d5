"""The per-event cost of a kernel struct field read through BTF (BTF_READ), next to a direct
tracepoint-argument read and a hand-written bpf_probe_read_kernel of the same field. The
target is on the compiled program, which noise cannot move: BTF_READ makes as many probe reads
as the hand-written read (one more than the argument read); the times say what that costs."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from exporter.btf.cache import CachedFields
from exporter.btf.kernel import KernelBTF
from exporter.btf.spelling import rewrite

from .common import Options, Section, Table, compile_workloads, median, verdict
from .events import measure

FUNCTION = b"tracepoint__raw_syscalls__sys_enter"
CALL, PROBE_READ_KERNEL = 0x85, 113  # BPF_JMP|BPF_CALL; enum bpf_func_id

# Each program stores what it read in a per-CPU slot, so that the read cannot be optimised out.
STORE = "BPF_PERCPU_ARRAY(out, u64, 1);\n"
PROBE = "TRACEPOINT_PROBE(raw_syscalls, sys_enter) {\n    u32 zero = 0; u64 *slot = out.lookup(&zero);\n    if (!slot) return 0;\n%s    return 0;\n}\n"  # noqa: E501
TASK = "    void *task = (void *)bpf_get_current_task();\n"
VARIANTS = {
    "tracepoint argument": PROBE % "    *slot = args->id;\n",
    # What a header-based read compiles to, with the offset the kernel's BTF gives (%d).
    "hand-written probe read": PROBE
    % (
        TASK
        + "    u32 v = 0;\n    bpf_probe_read_kernel(&v, 4, (char *)task + %d);\n    *slot = v;\n"
    ),
    "BTF_READ": PROBE % (TASK + "    *slot = BTF_READ(task, struct task_struct, tgid);\n"),
    "BTF_READ, one `->`": PROBE
    % (TASK + "    *slot = BTF_READ(task, struct task_struct, real_parent->tgid);\n"),
}


def run(opts: Options) -> list[Section]:
    loops = compile_workloads(opts)
    cpu = max(os.sched_getaffinity(0))
    fields = CachedFields(KernelBTF())
    tgid = fields.access("struct task_struct", "tgid").offsets[-1]
    programs = {
        name: rewrite(STORE + text.replace("%d", str(tgid)), fields.access)
        for name, text in VARIANTS.items()
    }
    rounds, ops = opts.pick(7, 1), opts.pick(2_000_000, 20_000)
    samples: dict[str, list[float]] = {}
    compiled: dict[str, tuple[int, int]] = {}
    for _ in range(rounds):  # interleaved, as bench/events.py: drift hits every variant alike
        samples.setdefault("nothing", []).append(measure(loops, "getpid", ops, cpu))
        for name, text in programs.items():
            with attached(text) as instructions:
                samples.setdefault(name, []).append(measure(loops, "getpid", ops, cpu))
            compiled[name] = instructions
    return [section(samples, compiled, rounds, cpu)]


@contextmanager
def attached(text: str) -> Iterator[tuple[int, int]]:
    """The program attached; yields its (instructions, probe reads) as compiled."""
    from bcc import BPF  # only here, as bench/events.py

    bpf = BPF(text=text)
    try:
        code = bpf.dump_func(FUNCTION)
        calls = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
        reads = sum(1 for op, _, _, imm in calls if op == CALL and imm == PROBE_READ_KERNEL)
        yield len(calls), reads
    finally:
        bpf.cleanup()


def section(
    samples: dict[str, list[float]], compiled: dict[str, tuple[int, int]], rounds: int, cpu: int
) -> Section:
    out = Section(
        "BTF field reads per event",
        f"`bench/loops.c getpid` pinned to CPU {cpu}, CPU time per getpid(2), median of {rounds} "
        "interleaved runs, with one program on `raw_syscalls:sys_enter` that stores into a "
        "per-CPU slot: the syscall number (a tracepoint argument); `current->tgid` read with "
        "`bpf_probe_read_kernel` at the offset written by hand (what a header-based read "
        "compiles to, here with the right offset); the same through `BTF_READ`; and "
        "`current->real_parent->tgid` through `BTF_READ` (one probe read more). *Added* is ns "
        "above nothing attached.",
        [],
    )
    nothing = median(samples["nothing"])
    added = {name: median(values) - nothing for name, values in samples.items()}
    table = Table(["program", "instructions", "probe reads", "ns per event", "added", "runs (ns)"])
    for name, values in samples.items():
        instructions, reads = compiled.get(name, (0, 0))
        table.rows.append(
            [
                name,
                str(instructions) if name in compiled else "–",
                str(reads) if name in compiled else "–",
                f"{median(values):.0f}",
                "–" if name == "nothing" else f"{added[name]:+.0f}",
                " ".join(f"{v:.0f}" for v in values),
            ]
        )
    out.tables = [table]
    hand, btf = compiled["hand-written probe read"], compiled["BTF_READ"]
    arg = compiled["tracepoint argument"]
    out.notes.append(
        f"`BTF_READ` makes {btf[1]} probe read(s), the hand-written read {hand[1]}, the argument"
        f" read {arg[1]} (target: BTF_READ = hand-written = argument + 1): "
        + verdict(out, btf[1] == hand[1] == arg[1] + 1)
    )
    return out
