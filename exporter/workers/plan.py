"""How a batch of compile jobs is shared among workers (longest first), and how many compile
at once (from the CPUs and memory this process may use)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from .messages import CompileJob

# A guess at a program's compile time, in bytes of plain source: it grows by ~17 ms per KB
# from ~0.1 s (what any program costs, as much as 6 KB of source), and much more with each
# kernel header it includes: profile's uapi/linux/bpf_perf_event.h pulls in linux/sched.h,
# 0.7 s of its 0.85 s. Architecture headers (asm/unistd.h) are small and not counted.
JOB_COST = 6_000
INCLUDE_COST = 40_000
CGROUP_ROOT = Path("/sys/fs/cgroup")
# For benchmarks only (bench/start.py): the CPU count the kernel would report on a bigger node,
# so that a 2-CPU machine can show start-up memory does not grow with it. Cgroup quotas still
# apply; anything but a positive integer is ignored. Not a setting: --loader.jobs is.
PRETEND_CPUS = "BCC_EXPORTER_PRETEND_CPUS"
_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include[ \t]*[<\"](?!asm/)", re.MULTILINE)


def cost(job: CompileJob) -> int:
    return JOB_COST + len(job.code) + INCLUDE_COST * len(_INCLUDE.findall(job.code))


def plan(costs: Sequence[int], workers: int) -> list[list[int]]:
    """Share jobs among workers: longest first, each to the worker with the least work so far
    (LPT scheduling, within 4/3 of the best split); each share in the order it is compiled."""
    shares: list[list[int]] = [[] for _ in range(min(workers, len(costs)))]
    loads = [0] * len(shares)
    for index in sorted(range(len(costs)), key=lambda i: -costs[i]):
        least = loads.index(min(loads))
        shares[least].append(index)
        loads[least] += costs[index]
    return shares


# What one compile adds at its peak beyond the shared bcc import (private pages of clang and
# LLVM: ~45 MB PSS each with the built-ins, more for programs with many kernel headers), and
# how many run at once whatever the node's size: start-up memory must not grow with the CPU
# count (a 16-CPU node once peaked at 2.2 GB with one worker per CPU). Two: the default set's
# process tree then peaks under 250 MB on any node, and its compiles (~1.4 s of CPU) finish
# in ~0.7 s; a third and fourth slot would buy ~0.2 s on bigger nodes for ~45 MB each.
COMPILE_BYTES = 128 << 20
MAX_COMPILES = 2


def compile_slots(cpus: int, available: int | None) -> int:
    """Compiles at once: one per CPU this process may use, at most MAX_COMPILES, and no more
    than half the memory available (the host's or the cgroup's) can hold."""
    by_memory = cpus if available is None else available // 2 // COMPILE_BYTES
    return max(1, min(cpus, MAX_COMPILES, by_memory))


def usable_cpus(cgroup: Path | None = None) -> int:
    """CPUs this process may run on (affinity and cpuset), within its cgroup's CPU quota:
    os.cpu_count() knows neither (a container limited to 2 CPUs on a 128-CPU node)."""
    pretend = os.environ.get(PRETEND_CPUS, "")
    cpus = (
        int(pretend) if pretend.isdecimal() and int(pretend) > 0 else len(os.sched_getaffinity(0))
    )
    for directory in _cgroup_dirs(cgroup):
        try:
            quota, period = (directory / "cpu.max").read_text().split()
        except (OSError, ValueError):
            continue
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    return cpus


def available_memory(
    meminfo: Path = Path("/proc/meminfo"), cgroup: Path | None = None
) -> int | None:
    """Bytes that can still be used: the host's MemAvailable, or what the tightest cgroup
    memory.max above this process leaves, whichever is smaller; None if neither is known."""
    found = []
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for directory in _cgroup_dirs(cgroup):
        try:
            limit = (directory / "memory.max").read_text().strip()
            if limit != "max":
                found.append(int(limit) - int((directory / "memory.current").read_text()))
        except (OSError, ValueError):
            continue
    return max(0, min(found)) if found else None


def _cgroup_dirs(cgroup: Path | None) -> list[Path]:
    """This process's cgroup (v2) directory and its parents, innermost first."""
    if cgroup is None:
        try:
            line = Path("/proc/self/cgroup").read_text().splitlines()[0]
        except (OSError, IndexError):
            return []
        hierarchy, _, path = line.partition("::")
        if hierarchy != "0":
            return []
        cgroup = CGROUP_ROOT / path.lstrip("/")
    dirs = []
    while cgroup != CGROUP_ROOT and CGROUP_ROOT in cgroup.parents:
        dirs.append(cgroup)
        cgroup = cgroup.parent
    return dirs
