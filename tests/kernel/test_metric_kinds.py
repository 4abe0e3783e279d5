"""Gauges, label sets that decode alike, decoder errors, verifier messages, concurrent scrapes."""

from __future__ import annotations

import os
import threading

GETPPID_SLOTS = """
programs:
  - name: kinds
    code: |
      BPF_ARRAY(last_caller, u64, 1);
      BPF_HASH(calls, u32, u64);
      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
          u64 tgid = bpf_get_current_pid_tgid() >> 32;
          if (tgid != TARGET_TGID)
              return 0;
          u32 zero = 0;
          last_caller.update(&zero, &tgid);
          u64 *n = calls.lookup(&zero);
          u32 slot = n ? *n %% 2 + 1 : 1;   // alternate between keys 1 and 2
          calls.increment(slot);
          u32 total = 0;
          calls.increment(total);
          return 0;
      }
    cflags: ["-DTARGET_TGID=%d"]
    metrics:
      gauges:
        - name: last_getppid_caller
          help: tgid of the last getppid caller (the test process).
          map: last_caller
          labels:
            - {name: slot, size: 4, decoders: [{name: uint}]}
      counters:
        - name: getppid_by_name_total
          help: getppid calls; keys 1 and 2 both decode to "odd_or_even", 0 to "all".
          map: calls
          labels:
            - name: kind
              size: 4
              decoders:
                - {name: uint}
                - {name: static_map, static_map: {0: all, 1: odd_or_even, 2: odd_or_even}}
      histograms:
        - name: getppid_bad_buckets
          help: the same map read as a histogram whose bucket decoder yields no number.
          map: calls
          bucket_type: linear
          bucket_max: 2
          labels:
            - name: bucket
              size: 4
              decoders:
                - {name: uint}
                - {name: static_map, static_map: {0: zero, 1: one, 2: two}}
"""


def test_gauge_sum_of_alike_labels_and_decoder_errors(daemon, write_config):
    exporter = daemon(f"--config.file={write_config('kinds', GETPPID_SLOTS % os.getpid())}")
    for _ in range(23):
        os.getppid()
    samples = exporter.scrape()

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert value("bcc_last_getppid_caller", slot="0") == os.getpid()
    # Keys 1 (12 calls) and 2 (11 calls) decode to one label set: one series, summed.
    assert value("bcc_getppid_by_name_total", kind="odd_or_even") == 23
    assert value("bcc_getppid_by_name_total", kind="all") == 23
    # Three keys whose bucket decodes to text: each is a decoder error, none a series.
    assert value("bcc_getppid_bad_buckets_bucket", le="+Inf") == 0
    assert (
        value("bcc_exporter_decoder_errors_total", program="kinds", metric="getppid_bad_buckets")
        == 3
    )
    assert value("bcc_exporter_collect_success", program="kinds") == 1


VERIFIER_REJECTS = """
programs:
  - name: rejected
    code: |
      int reads_hidden_field(void *ctx) {
          return *(unsigned short *)ctx;  // the first 8 bytes of a record are off limits
      }
    probes:
      - {function: reads_hidden_field, attach: "tracepoint:sched:sched_switch"}
"""


def test_verifier_rejection_quotes_the_verifier(daemon, write_config):
    exporter = daemon(f"--config.file={write_config('rejected', VERIFIER_REJECTS)}")
    line = next(
        line
        for line in exporter.log().splitlines()
        if 'program "rejected"' in line and "ERROR" in line
    )
    assert "Failed to load BPF program b'reads_hidden_field': Permission denied" in line
    assert "verifier: " in line and "invalid bpf_context access off=0 size=2" in line


def test_concurrent_scrapes_all_succeed_and_never_go_backwards(daemon):
    exporter = daemon("--config.names=syscalls,opens")
    errors: list[BaseException] = []
    seen: list[list[float]] = [[] for _ in range(8)]

    def scraper(i: int) -> None:
        try:
            for _ in range(25):
                seen[i].append(exporter.value("bcc_syscalls_total", syscall="getppid"))
                os.getppid()
        except BaseException as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=scraper, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for values in seen:
        assert values == sorted(values) and values[-1] > 0


FIFTY_KEYS = """
programs:
  - name: many
    code: |
      BPF_HASH(calls, u32, u64, 128);
      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
          if (bpf_get_current_pid_tgid() >> 32 != TARGET_TGID)
              return 0;
          u32 zero = 0;
          u64 *n = calls.lookup(&zero);
          u32 key = n ? *n + 1 : 1;   // 0 counts calls; keys 1..50 one each
          calls.increment(key);
          calls.increment(zero);
          return 0;
      }
    cflags: ["-DTARGET_TGID=%d"]
    metrics:
      counters:
        - name: many_total
          help: one series per getppid call.
          map: calls
          labels:
            - {name: key, size: 4, decoders: [{name: uint}]}
"""


def test_series_over_the_limit_are_dropped_and_counted_and_map_fill_shown(daemon, write_config):
    config = write_config("many", FIFTY_KEYS % os.getpid())
    exporter = daemon(f"--config.file={config}", "--metrics.max-series=23")
    for _ in range(50):
        os.getppid()
    samples = exporter.scrape()
    series = [labels for (name, labels), _ in samples.items() if name == "bcc_many_total"]
    assert len(series) == 23
    assert (
        samples[
            (
                "bcc_exporter_series_dropped_total",
                frozenset({("program", "many"), ("metric", "many_total")}),
            )
        ]
        == 51 - 23
    )
    fill = frozenset({("program", "many"), ("map", "calls")})
    assert samples[("bcc_exporter_map_entries", fill)] == 51
    assert samples[("bcc_exporter_map_max_entries", fill)] == 128
    assert "many_total has 51 series, over the limit of 23: 28 dropped" in exporter.log()
    # Each dropped series counted once, however many scrapes drop it again.
    exporter.scrape()
    again = exporter.scrape()
    dropped = frozenset({("program", "many"), ("metric", "many_total")})
    assert again[("bcc_exporter_series_dropped_total", dropped)] == 51 - 23
