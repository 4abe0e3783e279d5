"""A log2 histogram fed by sleeps of known length lands every one in the bucket containing it."""

from __future__ import annotations

import os

from .histograms import timed_sleep

M = 23
SLEEP = 0.017  # 17 ms: 0.6 ms above its bucket's floor, 15.8 ms below its ceiling

SLEEPS = """
programs:
  - name: sleeps
    code: |
      #define SUM_SLOT 255
      BPF_HASH(start, u32, u64);
      BPF_HASH(sleep_latency, u32, u64);
      TRACEPOINT_PROBE(syscalls, sys_enter_clock_nanosleep) {
          u64 id = bpf_get_current_pid_tgid();
          if (id >> 32 != TARGET_TGID)
              return 0;
          u32 tid = id;
          u64 ts = bpf_ktime_get_ns();
          start.update(&tid, &ts);
          return 0;
      }
      TRACEPOINT_PROBE(syscalls, sys_exit_clock_nanosleep) {
          u32 tid = bpf_get_current_pid_tgid();
          u64 *ts = start.lookup(&tid);
          if (!ts)
              return 0;
          u64 usecs = (bpf_ktime_get_ns() - *ts) / 1000;
          start.delete(&tid);
          // Not .increment(): in bcc 0.26 it silently does nothing on a BPF_PERCPU_HASH.
          u64 zero = 0;
          u32 slot = bpf_log2l(usecs);
          u64 *count = sleep_latency.lookup_or_try_init(&slot, &zero);
          if (count)
              __sync_fetch_and_add(count, 1);
          u32 sum_slot = SUM_SLOT;
          u64 *sum = sleep_latency.lookup_or_try_init(&sum_slot, &zero);
          if (sum)
              __sync_fetch_and_add(sum, usecs);
          return 0;
      }
    cflags: ["-DTARGET_TGID=%d"]
    metrics:
      histograms:
        - name: sleep_seconds
          help: clock_nanosleep latency of the test process.
          map: sleep_latency
          bucket_type: exp2
          bucket_min: 0
          bucket_max: 30
          bucket_multiplier: 0.000001
          sum_key: 255
          labels:
            - {name: bucket, size: 4, decoders: [{name: uint}]}
"""


def test_sleeps_land_in_the_bucket_that_contains_them(daemon, write_config):
    exporter = daemon(f"--config.file={write_config('sleeps', SLEEPS % os.getpid())}")
    took = [timed_sleep(SLEEP) for _ in range(M)]
    samples = exporter.scrape()

    def bucket(le: str) -> float:
        return samples[("bcc_sleep_seconds_bucket", frozenset({("le", le)}))]

    # 17 ms = 17000 us: bpf_log2l gives slot 15 (16384 <= us < 32768), exported as le=2^15 us.
    # A sleep overshoots by the wake-up latency (never undershoots), which a busy machine can
    # stretch past the 15.8 ms of headroom: the sleeps that took less than 32.768 ms around
    # the call are there, at least.
    assert bucket("0.016384") == 0
    assert sum(t < 0.032768 for t in took) <= bucket("0.032768") <= M, took
    assert bucket("+Inf") == M
    assert samples[("bcc_sleep_seconds_count", frozenset())] == M
    total = samples[("bcc_sleep_seconds_sum", frozenset())]
    assert M * SLEEP <= total <= sum(took)


def test_percpu_histogram_summed_and_split_by_cpu(daemon, write_config):
    cpus = sorted(os.sched_getaffinity(0))
    split = {cpus[0]: 11, cpus[-1]: 12} if len(cpus) > 1 else {cpus[0]: M}
    percpu = SLEEPS.replace("BPF_HASH(sleep_latency", "BPF_PERCPU_HASH(sleep_latency")
    by_cpu = percpu.replace(
        "labels:\n            - {name: bucket",
        "labels:\n            - {name: cpu, decoders: [{name: cpu}]}\n            - {name: bucket",
    ).replace("name: sleep_seconds", "name: sleep_by_cpu_seconds")
    both = by_cpu.replace("  - name: sleeps", "  - name: sleeps_by_cpu") + percpu.removeprefix(
        "\nprograms:\n"
    )
    exporter = daemon(f"--config.file={write_config('sleeps', both % (os.getpid(), os.getpid()))}")
    original = os.sched_getaffinity(0)
    took = {}
    try:
        for cpu, sleeps in split.items():
            os.sched_setaffinity(0, {cpu})
            took[cpu] = [timed_sleep(SLEEP) for _ in range(sleeps)]
    finally:
        os.sched_setaffinity(0, original)
    samples = exporter.scrape()
    within = {cpu: sum(t < 0.032768 for t in times) for cpu, times in took.items()}
    bucket = samples[("bcc_sleep_seconds_bucket", frozenset({("le", "0.032768")}))]
    assert sum(within.values()) <= bucket <= M, took
    for cpu, sleeps in split.items():
        labels = frozenset({("cpu", str(cpu)), ("le", "0.032768")})
        assert within[cpu] <= samples[("bcc_sleep_by_cpu_seconds_bucket", labels)] <= sleeps
        assert samples[("bcc_sleep_by_cpu_seconds_count", frozenset({("cpu", str(cpu))}))] == sleeps
