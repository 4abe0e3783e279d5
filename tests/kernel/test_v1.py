"""cloudflare/ebpf_exporter v1 (BCC era) config files run unchanged, with v1's names."""

from __future__ import annotations

import os

from . import workload

K = 23

# Written from the v1 format: tracepoints and raw_tracepoints sections, kaddrs, a ksym counter,
# a histogram keyed by a struct with a string, a static_map op and a bucket, a perf_map counter,
# and a kprobe program that cannot attach on a kernel without kprobes.
V1_CONFIG = """
programs:
  - name: kaddr_calls
    metrics:
      counters:
        - name: kaddr_calls_total
          help: getppid calls by the test process, keyed by a kaddr
          table: counts
          labels:
            - name: function
              size: 8
              decoders:
                - name: ksym
    tracepoints:
      syscalls:sys_enter_getppid: count_getppid
    kaddrs:
      - do_sys_openat2
    cflags:
      - -DTARGET_TGID=%(tgid)d
    code: |
      BPF_HASH(counts, u64);
      int count_getppid(struct tracepoint__syscalls__sys_enter_getppid *args) {
          if (bpf_get_current_pid_tgid() >> 32 != TARGET_TGID)
              return 0;
          counts.increment((u64) kaddr_do_sys_openat2);
          return 0;
      }
  - name: sleeps
    metrics:
      histograms:
        - name: sleep_latency_seconds
          help: clock_nanosleep latency by comm and kind
          table: latency
          bucket_type: exp2
          bucket_min: 0
          bucket_max: 26
          bucket_multiplier: 0.000001
          labels:
            - name: comm
              size: 16
              decoders:
                - name: string
            - name: kind
              size: 8
              decoders:
                - name: uint
                - name: static_map
                  static_map:
                    1: nanosleep
            - name: bucket
              size: 8
              decoders:
                - name: uint
    tracepoints:
      syscalls:sys_enter_clock_nanosleep: enter
      syscalls:sys_exit_clock_nanosleep: leave
    code: |
      typedef struct sleep_key { char comm[16]; u64 kind; u64 slot; } sleep_key_t;
      BPF_HASH(start, u32, u64);
      BPF_HISTOGRAM(latency, sleep_key_t);
      int enter(struct tracepoint__syscalls__sys_enter_clock_nanosleep *args) {
          u32 tid = bpf_get_current_pid_tgid();
          u64 ts = bpf_ktime_get_ns();
          start.update(&tid, &ts);
          return 0;
      }
      int leave(struct tracepoint__syscalls__sys_exit_clock_nanosleep *args) {
          u32 tid = bpf_get_current_pid_tgid();
          u64 *ts = start.lookup(&tid);
          if (!ts)
              return 0;
          u64 usecs = (bpf_ktime_get_ns() - *ts) / 1000;
          start.delete(&tid);
          sleep_key_t key = {.kind = 1};
          bpf_get_current_comm(&key.comm, sizeof(key.comm));
          key.slot = bpf_log2l(usecs);
          if (key.slot > 26)
              key.slot = 26;
          latency.increment(key);
          key.slot = 27;  // bucket_max + 1: the sum
          latency.increment(key, usecs);
          return 0;
      }
  - name: raw_getppid
    metrics:
      counters:
        - name: raw_getppid_total
          help: getppid calls by comm, from the raw sys_enter tracepoint
          table: calls
          labels:
            - name: comm
              size: 16
              decoders:
                - name: string
    raw_tracepoints:
      sys_enter: on_sys_enter
    code: |
      struct key_t { char comm[16]; };
      BPF_HASH(calls, struct key_t);
      int on_sys_enter(struct bpf_raw_tracepoint_args *ctx) {
          if (ctx->args[1] != 110)  // getppid on x86_64
              return 0;
          struct key_t key = {};
          bpf_get_current_comm(&key.comm, sizeof(key.comm));
          calls.increment(key);
          return 0;
      }
  - name: getppid_events
    metrics:
      counters:
        - name: getppid_events  # no _total, as oomkill.yaml's oom_kills
          help: getppid calls by comm, one perf event each
          perf_map: events
          labels:
            - name: comm
              size: 16
              decoders:
                - name: string
    tracepoints:
      syscalls:sys_enter_getppid: send_event
    code: |
      struct event_t { char comm[16]; u64 ts; };
      BPF_PERF_OUTPUT(events);
      int send_event(struct tracepoint__syscalls__sys_enter_getppid *args) {
          struct event_t event = {.ts = bpf_ktime_get_ns()};
          bpf_get_current_comm(&event.comm, sizeof(event.comm));
          // Only test workloads (comm "bccx..."): a getppid storm elsewhere on the machine
          // would fill the ring and the test's own events would be lost (and counted lost).
          if (event.comm[0] != 'b' || event.comm[1] != 'c' || event.comm[2] != 'c'
              || event.comm[3] != 'x')
              return 0;
          events.perf_submit(args, &event, sizeof(event));
          return 0;
      }
  - name: kprobe_only
    metrics:
      counters:
        - name: vfs_reads_total
          help: vfs_read calls
          table: reads
          labels:
            - name: slot
              size: 4
              decoders:
                - name: uint
    kprobes:
      vfs_read: count_read
    code: |
      BPF_ARRAY(reads, u64, 1);
      int count_read(struct pt_regs *ctx) {
          reads.increment(0);
          return 0;
      }
"""


def kprobes_available() -> bool:
    return os.path.exists("/sys/bus/event_source/devices/kprobe")


def test_v1_config_runs_unchanged(daemon, write_config):
    config = write_config("v1", V1_CONFIG % {"tgid": os.getpid()})
    exporter = daemon(f"--config.file={config}")
    comm = workload.unique_comm()
    # Every figure is one child's (a unique comm): the test process itself sleeps and calls
    # things (subprocess waits, polling) that would count too. The kaddr program filters on
    # this process's tgid and counts getppid, which only the loop below calls.
    took = workload.run(
        comm,
        f"""
import time
for _ in range({K}):
    os.getppid()
    started = time.monotonic()
    time.sleep(0.017)
    print(time.monotonic() - started)
""",
    )
    # A sleep overshoots by the wake-up latency, which a busy machine can stretch past the
    # 15.8 ms of headroom in le=32.768 ms: the sleeps that took less around the call are there.
    slept = [float(t) for t in took.split()]
    within = sum(t < 0.032768 for t in slept)
    for _ in range(K):
        os.getppid()
    samples = exporter.scrape()

    def value(sample: str, **labels: str) -> float:
        return samples.get((sample, frozenset(labels.items())), 0.0)

    series = {"comm": comm, "kind": "nanosleep"}
    seen = {
        "kaddr": value("ebpf_exporter_kaddr_calls_total", function="do_sys_openat2"),
        "raw": value("ebpf_exporter_raw_getppid_total", comm=comm),
        "events": value("ebpf_exporter_getppid_events", comm=comm),
        "le_16ms": value("ebpf_exporter_sleep_latency_seconds_bucket", **series, le="0.016384"),
        "le_max": value("ebpf_exporter_sleep_latency_seconds_bucket", **series, le="67.108864"),
        "count": value("ebpf_exporter_sleep_latency_seconds_count", **series),
    }
    # All at once, so that a failure shows every figure.
    assert seen == {
        "kaddr": K,
        "raw": K,
        "events": K,
        "le_16ms": 0,
        "le_max": K,
        "count": K,
    }
    le_32ms = value("ebpf_exporter_sleep_latency_seconds_bucket", **series, le="0.032768")
    assert within <= le_32ms <= K, slept
    assert K * 0.017 <= value("ebpf_exporter_sleep_latency_seconds_sum", **series) <= sum(slept)
    for name in ("kaddr_calls", "sleeps", "raw_getppid", "getppid_events"):
        assert value("ebpf_exporter_enabled_programs", name=name) == 1
    if not kprobes_available():
        # v1 died on the first probe it could not attach; here that program alone is skipped.
        assert value("bcc_exporter_enabled_programs", program="kprobe_only") == 0
        assert value("ebpf_exporter_enabled_programs", name="kprobe_only") == 0
        assert 'program "kprobe_only": skipped: function count_read: no probe' in exporter.log()
