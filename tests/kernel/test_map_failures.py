"""Failed map updates are counted in the kernel (EXPORTER_UPDATE_FAILED, the prelude every
program is compiled with) and exported as bcc_exporter_map_update_failures_total{program,map}:
exactly, for a tiny hash filled by a known workload; a built-in program's full LRU map makes
room instead, and counts the keys it evicts (bcc_exporter_map_evictions_total)."""

from __future__ import annotations

import contextlib
import os

import yaml

from . import workload
from .conftest import REPO

FAILURES = "bcc_exporter_map_update_failures_total"
EVICTIONS = "bcc_exporter_map_evictions_total"
# 10 distinct keys into a hash of 4: the first 4 get a slot, the other 6 fail once each.
KEYS = [1 << 20 | i for i in range(10)]

TINY = """
programs:
  - name: tiny
    cflags: ["-DTARGET_TGID=%d"]
    code: |
      BPF_HASH(tiny_counts, u32, u64, 4);
      BPF_HASH(never_counted, u32, u64, 4);
      TRACEPOINT_PROBE(syscalls, sys_enter_getpriority) {
          if (bpf_get_current_pid_tgid() >> 32 != TARGET_TGID)
              return 0;
          u32 key = args->who;
          u64 zero = 0, *count = tiny_counts.lookup_or_try_init(&key, &zero);
          if (count)
              __sync_fetch_and_add(count, 1);
          else
              EXPORTER_UPDATE_FAILED(tiny_counts);
          // EXPORTER_UPDATE_FAILED(not_a_map) in a comment names no series
          return 0;
      }
    metrics:
      counters:
        - name: tiny_calls_total
          help: getpriority calls of the test by `who`.
          map: tiny_counts
          labels:
            - {name: who, size: 4, decoders: [{name: uint}]}
"""


def getpriority(who: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # no such process: the call still counts
        os.getpriority(os.PRIO_PROCESS, who)


def test_a_full_hash_counts_each_failed_update_exactly(daemon, write_config):
    exporter = daemon(f"--config.file={write_config('tiny', TINY % os.getpid())}")
    # Shown at 0 before any failure, so that the first one is an increase Prometheus sees.
    assert (
        exporter.scrape()[(FAILURES, frozenset({("program", "tiny"), ("map", "tiny_counts")}))] == 0
    )
    for who in KEYS:
        getpriority(who)
    for who in KEYS[:4]:  # keys that have their slot still count: no failure
        getpriority(who)
        getpriority(who)
    samples = exporter.scrape()
    counted = {
        dict(labels)["who"]: value
        for (name, labels), value in samples.items()
        if name == "bcc_tiny_calls_total"
    }
    assert counted == {str(who): 3 for who in KEYS[:4]}
    failures = {
        dict(labels)["map"]: value
        for (name, labels), value in samples.items()
        if name == FAILURES and dict(labels)["program"] == "tiny"
    }
    assert failures == {"tiny_counts": 6}


OPEN_ONCE = """
os.close(os.open(sys.argv[2], os.O_RDONLY))
"""
OPEN_23 = """
for _ in range(23):
    os.close(os.open(sys.argv[2], os.O_RDONLY))
"""


def test_builtin_opens_full_map_makes_room_for_a_new_comm_and_counts_evictions(
    daemon, write_config, tmp_path
):
    """An LRU map of 4 keys: new comms keep coming, the newest is counted exactly, nothing is
    lost, and the keys evicted to make room are counted exactly. Only the test's comms count
    (COMM_PREFIX): any other process opening a file under a comm new to the map would take a
    key too, and evict one of the test's at a moment of its choosing."""
    config = yaml.safe_load((REPO / "config" / "opens.yaml").read_text())
    [program] = config["programs"]
    program.update(
        name="opens_full",
        source=str(REPO / "programs" / "opens.bpf.c"),
        cflags=["-DMAX_KEYS=4", f'-DCOMM_PREFIX="{workload.COMM_PREFIX}"'],
    )
    exporter = daemon(f"--config.file={write_config('opens_full', yaml.safe_dump(config))}")
    target = tmp_path / "target"
    target.write_text("x")
    labels = frozenset({("program", "opens_full"), ("map", "opens_total")})
    # Shown at 0 from the first scrape, so that the first eviction is an increase.
    assert exporter.scrape()[(EVICTIONS, labels)] == 0
    for _ in range(6):  # 6 new comms: the first 4 fill the map, the other 2 evict one each
        workload.run(workload.unique_comm(), OPEN_ONCE, str(target))
    before = exporter.scrape()
    assert before[("bcc_exporter_map_entries", labels)] == 4
    assert before[(EVICTIONS, labels)] == 2

    comm = workload.unique_comm()
    workload.run(comm, OPEN_23, str(target))
    samples = exporter.scrape()
    counted = [
        value
        for (name, found), value in samples.items()
        if name == "bcc_opens_total" and dict(found)["comm"] == comm
    ]
    assert counted == [23]
    assert samples[(FAILURES, labels)] == 0  # an LRU map never refuses a key
    assert samples[(EVICTIONS, labels)] == 3
