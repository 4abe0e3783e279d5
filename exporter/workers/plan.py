"""How a batch of compile jobs is shared among workers (longest first)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .messages import CompileJob

# A guess at a program's compile time, in bytes of plain source: it grows by ~17 ms per KB
# from ~0.1 s (what any program costs, as much as 6 KB of source), and much more with each
# kernel header it includes: profile's uapi/linux/bpf_perf_event.h pulls in linux/sched.h,
# 0.7 s of its 0.85 s. Architecture headers (asm/unistd.h) are small and not counted.
JOB_COST = 6_000
INCLUDE_COST = 40_000
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
