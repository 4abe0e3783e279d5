"""How programs are shared among compile workers: longest first, to the least loaded worker."""

from __future__ import annotations

import os
from contextlib import contextmanager

from exporter.config import select
from exporter.workers.messages import CompileJob, CompileSettings
from exporter.workers.plan import (
    COMPILE_BYTES,
    MAX_COMPILES,
    PRETEND_CPUS,
    available_memory,
    compile_slots,
    cost,
    plan,
    usable_cpus,
)

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


# --- how many compile at once --------------------------------------------------------------

MB = 1 << 20


def test_compiles_at_once_follow_cpus_up_to_a_bound_that_no_cpu_count_raises():
    assert compile_slots(2, 24_000 * MB) == 2
    assert compile_slots(16, 24_000 * MB) == compile_slots(128, 24_000 * MB) == MAX_COMPILES


def test_compiles_at_once_fit_in_half_the_available_memory():
    assert compile_slots(16, 4 * COMPILE_BYTES) == 2
    assert compile_slots(16, 3 * COMPILE_BYTES) == 1
    assert compile_slots(16, COMPILE_BYTES) == 1  # one always runs
    assert compile_slots(1, None) == 1  # memory unknown: the CPUs decide, within the bound
    assert compile_slots(3, None) == MAX_COMPILES


def test_a_cgroup_limit_is_the_memory_available(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 25000000 kB\nMemAvailable: 20000000 kB\n")
    leaf = tmp_path / "kubepods" / "pod"
    leaf.mkdir(parents=True)
    (leaf / "memory.max").write_text("max\n")
    (leaf.parent / "memory.max").write_text(f"{600 * MB}\n")
    (leaf.parent / "memory.current").write_text(f"{100 * MB}\n")
    (leaf.parent / "cpu.max").write_text("150000 100000\n")
    with patch_root(tmp_path):
        assert available_memory(meminfo, leaf) == 500 * MB
        assert usable_cpus(leaf) == min(2, len(os.sched_getaffinity(0)))
    assert available_memory(meminfo, None) is not None


def test_a_pretended_cpu_count_replaces_the_affinity_but_not_the_quota(tmp_path, monkeypatch):
    leaf = tmp_path / "pod"
    leaf.mkdir()
    with patch_root(tmp_path):
        monkeypatch.setenv(PRETEND_CPUS, "128")
        assert usable_cpus(leaf) == 128
        (leaf / "cpu.max").write_text("300000 100000\n")
        assert usable_cpus(leaf) == 3
        for ignored in ("0", "-4", "many"):
            monkeypatch.setenv(PRETEND_CPUS, ignored)
            assert usable_cpus(leaf) == min(3, len(os.sched_getaffinity(0)))


@contextmanager
def patch_root(root):
    import exporter.workers.plan as module

    saved, module.CGROUP_ROOT = module.CGROUP_ROOT, root
    try:
        yield
    finally:
        module.CGROUP_ROOT = saved
