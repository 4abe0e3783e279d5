"""Counters from the shipped programs and from test programs, checked against exact workloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from . import workload

N = 23  # bcc's rule for tools: a prime number of events, matched exactly


def test_openat_by_comm_counts_exactly(daemon, tmp_path):
    exporter = daemon("--config.names=opens")
    comm = workload.unique_comm()
    target = tmp_path / "target"
    target.write_text("x")
    before = exporter.value("bcc_opens_total", comm=comm, result="ok")
    workload.run(
        comm,
        f"""
        for _ in range({N}):
            os.close(os.open({str(target)!r}, os.O_RDONLY))
    """,
    )
    assert before == 0
    assert exporter.value("bcc_opens_total", comm=comm, result="ok") == N


PERCPU = """
programs:
  - name: percpu
    code: |
      BPF_PERCPU_ARRAY(getppid_calls, u64, 1);
      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
          if (bpf_get_current_pid_tgid() >> 32 != TARGET_TGID)
              return 0;
          u32 zero = 0;
          u64 *count = getppid_calls.lookup(&zero);
          if (count)
              (*count)++;
          return 0;
      }
    cflags: ["-DTARGET_TGID=%d"]
    metrics:
      counters:
        - name: getppid_calls_total
          help: getppid calls of the test process, summed over CPUs.
          map: getppid_calls
          labels:
            - {name: slot, size: 4, decoders: [{name: uint}]}
"""


def getppid_on_cpus() -> dict[int, int]:
    """N getppid calls split between the first and last CPU (all on one CPU when there is
    one), pinned so that each CPU's slot gets a known share; returns cpu -> calls."""
    cpus = sorted(os.sched_getaffinity(0))
    per_cpu = {cpus[0]: 11, cpus[-1]: 12} if len(cpus) > 1 else {cpus[0]: N}
    original = os.sched_getaffinity(0)
    try:
        for cpu, calls in per_cpu.items():
            os.sched_setaffinity(0, {cpu})
            for _ in range(calls):
                os.getppid()
    finally:
        os.sched_setaffinity(0, original)
    return per_cpu


def test_percpu_counter_is_the_sum_over_cpus(daemon, write_config):
    exporter = daemon(f"--config.file={write_config('percpu', PERCPU % os.getpid())}")
    per_cpu = getppid_on_cpus()
    assert exporter.value("bcc_getppid_calls_total", slot="0") == sum(per_cpu.values()) == N
    # The kernel's own per-CPU view, through bpftool: the export is exactly its sum.
    dump = json.loads(
        subprocess.run(
            ["bpftool", "-j", "map", "dump", "name", "getppid_calls"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    # Maps without BTF dump as hex bytes.
    values = {
        v["cpu"]: int.from_bytes(bytes(int(b, 16) for b in v["value"]), sys.byteorder)
        for v in dump[0]["values"]
    }
    assert {cpu: values[cpu] for cpu in per_cpu} == per_cpu


def test_cpu_label_splits_a_percpu_map_by_cpu(daemon, write_config):
    config = PERCPU.replace(
        "- {name: slot, size: 4, decoders: [{name: uint}]}",
        "- {name: slot, size: 4, decoders: [{name: uint}]}\n"
        "            - {name: cpu, decoders: [{name: cpu}]}",
    )
    exporter = daemon(f"--config.file={write_config('percpu', config % os.getpid())}")
    per_cpu = getppid_on_cpus()
    samples = exporter.scrape()
    exported = {
        int(dict(labels)["cpu"]): value
        for (name, labels), value in samples.items()
        if name == "bcc_getppid_calls_total"
    }
    assert exported == per_cpu
