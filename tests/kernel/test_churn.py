"""Months on a busy node in a minute: maps that never stay full, series that leave with their
subjects (docs/operations.md, Keys that come and go).

- 30,000 processes with comms of their own make failed opens: the `opens` map (an LRU of
  10,240 keys) evicts, a comm opening all along keeps its exact count, and a comm new after
  the churn is counted exactly, with the daemon's memory and series bounded.
- 2,000 cgroups made, used and removed under the by-pod programs: each removed cgroup's keys
  are deleted with it (cgroup:cgroup_rmdir), its series leave /metrics, and the maps return to
  their size before the churn.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import yaml

from ..k8s_pods import builtin_program, directories
from . import workload
from .churn import Churn
from .conftest import REPO
from .test_big_map import MB, memory

COMMS = 30_000
OPENS_KEYS = 10_240  # opens.bpf.c's MAX_KEYS
CGROUPS = 2_000
CALLS = 23
# Bounds asserted, and written in docs/operations.md (measured: see there).
RSS_BOUND = 100 * MB  # measured: 60 MiB peak
OPENS = "bcc_opens_total"
EVICTIONS = "bcc_exporter_map_evictions_total"
FAILURES = "bcc_exporter_map_update_failures_total"
ENTRIES = "bcc_exporter_map_entries"

# Opens a missing file every millisecond until the stop file exists; prints how many.
ACTIVE = """
import time
n = 0
while not os.path.exists(sys.argv[2]):
    try:
        os.open(sys.argv[3], os.O_RDONLY)
    except FileNotFoundError:
        n += 1
    time.sleep(0.001)
print(n)
"""
TWENTY = """
for _ in range(20):
    try:
        os.open(sys.argv[2], os.O_RDONLY)
    except FileNotFoundError:
        pass
"""


def enoent(samples: dict, comm: str) -> float | None:  # type: ignore[type-arg]
    return samples.get((OPENS, frozenset({("comm", comm), ("result", "ENOENT")})))


def test_30000_comms_never_fill_opens_for_good(daemon, tmp_path):
    churn = Churn(tmp_path)
    exporter = daemon("--config.names=opens")
    missing = tmp_path / "missing"
    stop = tmp_path / "stop"
    opens_map = frozenset({("program", "opens"), ("map", "opens_total")})

    active_comm = workload.unique_comm()
    active = subprocess.Popen(
        [sys.executable, "-c", workload.PRELUDE + ACTIVE, active_comm, str(stop), str(missing)],
        stdout=subprocess.PIPE,
        text=True,
    )
    storm = threading.Thread(target=churn.comms, args=(Churn.prefix(), COMMS, missing))
    storm.start()
    scrapes = 0
    while storm.is_alive():  # scraped all along, as Prometheus does
        exporter.scrape()
        scrapes += 1
        time.sleep(0.5)
    storm.join()
    stop.touch()
    made = int(active.communicate(timeout=30)[0])

    samples = exporter.scrape()
    # The comm that opened all through the storm kept every one of its opens.
    assert made > 0
    assert enoent(samples, active_comm) == made
    assert samples[(FAILURES, opens_map)] == 0  # an LRU map never refuses a key
    assert samples[(ENTRIES, opens_map)] <= OPENS_KEYS
    # 30,000 keys were added and at most 10,240 are left.
    assert samples[(EVICTIONS, opens_map)] >= COMMS - OPENS_KEYS

    fresh = workload.unique_comm()
    workload.run(fresh, TWENTY, str(missing))
    deadline = time.monotonic() + 120
    while enoent(samples := exporter.scrape(), fresh) != 20:
        assert time.monotonic() < deadline, "a fresh comm's 20 opens were not counted in 120 s"
        time.sleep(1)

    series = sum(1 for name, _ in samples if name == OPENS)
    assert series <= OPENS_KEYS
    rss, peak = memory(exporter.proc.pid)
    assert peak < RSS_BOUND, (rss, peak, scrapes)
    print(
        f"opens churn: {scrapes} scrapes, {series} series, RSS {rss / MB:.0f}/{peak / MB:.0f} MiB"
    )


# The built-in by-pod programs' code, each cgroup its own series (the cgroup id, raw).
BY_ID = """
programs:
  - name: syscalls_by_cgroup
    source: {programs}/syscalls_by_pod.bpf.c
    metrics:
      counters:
        - name: cgroup_syscalls_total
          help: syscalls by cgroup id and number.
          map: pod_syscalls_total
          labels:
            - {{name: cgroup, size: 8, decoders: [{{name: uint}}]}}
            - {{name: nr, size: 4, padding: 4, decoders: [{{name: uint}}]}}
  - name: runqlat_by_cgroup
    source: {programs}/runqlat_by_pod.bpf.c
    metrics:
      histograms:
        - name: cgroup_runq_latency_seconds
          help: run-queue latency by cgroup id.
          map: pod_runq_latency
          bucket_type: exp2
          bucket_min: 0
          bucket_max: 26
          bucket_multiplier: 0.000001
          sum_key: 63
          labels:
            - {{name: cgroup, size: 8, decoders: [{{name: uint}}]}}
            - {{name: bucket, size: 4, padding: 4, decoders: [{{name: uint}}]}}
"""
SYSCALLS = "bcc_cgroup_syscalls_total"
RUNQ = "bcc_cgroup_runq_latency_seconds_count"

IN_CGROUP = f"""
with open(sys.argv[2], "w") as procs:
    procs.write(str(os.getpid()))
for _ in range({CALLS}):
    os.getppid()
"""


def cgroup_series(samples: dict, ids: set[str]) -> int:  # type: ignore[type-arg]
    return sum(1 for name, labels in samples if dict(labels).get("cgroup") in ids)


def test_2000_removed_cgroups_leave_the_maps_and_metrics(daemon, write_config, node, tmp_path):
    churn = Churn(tmp_path)
    config = write_config("by_id", BY_ID.format(programs=REPO / "programs"))
    pods = {
        "programs": [
            builtin_program(n, node.options) for n in ("syscalls_by_pod", "runqlat_by_pod")
        ]
    }
    pods_config = write_config("by_pod", yaml.safe_dump(pods))
    exporter = daemon(f"--config.file={config}", f"--config.file={pods_config}")
    syscalls_map = frozenset({("program", "syscalls_by_pod"), ("map", "pod_syscalls_total")})
    runq_map = frozenset({("program", "runqlat_by_pod"), ("map", "pod_runq_latency")})
    by_id_map = frozenset({("program", "syscalls_by_cgroup"), ("map", "pod_syscalls_total")})

    with directories(node.cgroups, "churn", "check") as [parent, check]:
        # One cgroup looked at closely: counted exactly while it lives, gone once removed.
        workload.run(workload.unique_comm(), IN_CGROUP, str(check / "cgroup.procs"))
        check_id = str(os.stat(check).st_ino)
        samples = exporter.scrape()
        getppid = frozenset({("cgroup", check_id), ("nr", "110")})  # x86_64's getppid
        assert samples[(SYSCALLS, getppid)] == CALLS
        before = exporter.scrape()

        ids = {str(i) for i in churn.cgroups(parent, CGROUPS, CALLS)}
        assert len(ids) == CGROUPS
    check_gone = exporter.scrape()
    samples = exporter.scrape()

    assert cgroup_series(check_gone, {check_id}) == 0
    assert cgroup_series(samples, ids) == 0
    # Every churned cgroup added keys (getppid at least), and every one of them was deleted.
    for fill in (syscalls_map, by_id_map):
        assert samples[(EVICTIONS, fill)] - before[(EVICTIONS, fill)] >= CGROUPS
        # Back to the size before the churn, give or take the node's own new keys meanwhile.
        assert samples[(ENTRIES, fill)] - before[(ENTRIES, fill)] < CGROUPS // 10
        assert samples[(FAILURES, fill)] == 0
    assert samples[(ENTRIES, runq_map)] - before[(ENTRIES, runq_map)] < CGROUPS // 10
    series = {name for name, _ in samples}
    assert RUNQ in series
    rss, peak = memory(exporter.proc.pid)
    assert peak < RSS_BOUND, (rss, peak)
    print(
        f"cgroups: {len(before)} -> {len(samples)} samples, RSS {rss / MB:.0f}/{peak / MB:.0f} MiB"
    )
