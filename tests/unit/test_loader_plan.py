"""How programs are shared among compile workers: longest first, to the least loaded worker."""

from __future__ import annotations

from exporter.config import select
from exporter.workers.messages import CompileJob, CompileSettings
from exporter.workers.plan import cost, plan

NO_SETTINGS = CompileSettings((), (), (), (), "")


def job(code: str) -> CompileJob:
    return CompileJob("p", code, NO_SETTINGS)


def test_longest_first_each_to_the_least_loaded_worker():
    # 7 and 6 open the two shares; 5 joins the 6 (11), 4 the 7 (11), 3 the first of equals.
    assert plan([3, 7, 4, 6, 5], 2) == [[1, 2, 0], [3, 4]]


def test_a_kernel_header_weighs_more_than_source_but_not_an_architecture_one():
    plain = cost(job("int x;\n" * 100))
    assert cost(job("#include <linux/sched.h>\nint x;")) > plain
    assert cost(job('  # include "net/sock.h"\nint x;')) > plain
    assert cost(job("#include <asm/unistd.h>\nint x;")) < plain


def test_no_more_workers_than_jobs_and_none_for_none():
    assert plan([5, 1], 8) == [[0], [1]]
    assert plan([], 4) == []


def test_one_worker_takes_everything_longest_first():
    assert plan([1, 3, 2], 1) == [[1, 2, 0]]


def test_the_default_programs_are_shared_evenly_costliest_first():
    specs = select(None, None, [])
    costs = [cost(job(spec.code)) for spec in specs]
    shares = plan(costs, 2)
    assert sorted(i for share in shares for i in share) == list(range(len(specs)))
    assert costs[shares[0][0]] == max(costs)
    loads = sorted(sum(costs[i] for i in share) for share in shares)
    assert loads[1] - loads[0] <= max(costs)
