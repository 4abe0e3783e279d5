"""ebpf_exporter v1 files: detected, validated in v1's own terms, converted to the native model."""

from pathlib import Path

import pytest

from exporter.config import load_file
from exporter.config.v1 import is_v1
from exporter.errors import ConfigError

V1 = """
programs:
  - name: timers
    metrics:
      counters:
        - name: timer_start_total
          help: Timers fired in the kernel
          table: counts
          labels:
            - name: function
              size: 8
              decoders:
                - name: ksym
        - name: events_total
          help: events
          perf_map: events
          labels:
            - {name: comm, size: 16, decoders: [{name: string}]}
      histograms:
        - name: lat_seconds
          help: latency
          table: lat
          bucket_type: exp2
          bucket_min: 0
          bucket_max: 26
          bucket_multiplier: 0.000001
          labels:
            - {name: bucket, size: 8, decoders: [{name: uint}]}
        - name: sizes_bytes
          help: sizes
          table: sizes
          bucket_type: fixed
          bucket_keys: [1, 10, 100]
          labels:
            - {name: bucket, size: 8, decoders: [{name: uint}]}
    kprobes:
      blk_start_request: trace_req_start
      blk_mq_start_request: trace_req_start
    kretprobes:
      vfs_read: ret
    tracepoints:
      timer:timer_start: tracepoint__timer__timer_start
    raw_tracepoints:
      sched_switch: on_switch
    perf_events:
      - type: 1
        name: 0
        target: on_sample
        sample_frequency: 49
      - type: 0
        name: 1
        target: on_instructions
        sample_period: 1000000
    kaddrs:
      - do_sys_open
    cflags:
      - -DX=1
    code: |
      int x;
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "v1.yaml"
    path.write_text(text)
    return path


def test_v1_is_detected_and_native_is_not():
    import yaml

    assert is_v1(yaml.safe_load(V1))
    native = {"programs": [{"name": "x", "code": "", "metrics": {"counters": [{"map": "m"}]}}]}
    assert not is_v1(native)


def test_v1_converts_to_the_same_meaning(tmp_path):
    [spec] = load_file(write(tmp_path, V1))
    program = spec.program
    assert program.namespace == "ebpf_exporter"
    assert program.cflags == ["-DX=1"]
    assert program.kaddrs == ["do_sys_open"]
    assert [(p.function, [str(a) for a in p.attach]) for p in program.probes] == [
        ("trace_req_start", ["kprobe:blk_start_request"]),
        ("trace_req_start", ["kprobe:blk_mq_start_request"]),
        ("ret", ["kretprobe:vfs_read"]),
        ("tracepoint__timer__timer_start", ["tracepoint:timer:timer_start"]),
        ("on_switch", ["raw_tracepoint:sched_switch"]),
        ("on_sample", ["profile:hz:49"]),
        ("on_instructions", ["hardware:instructions:1000000"]),
    ]
    counters = program.metrics.counters
    assert (counters[0].map, counters[0].perf_map) == ("counts", None)
    assert (counters[1].map, counters[1].perf_map) == (None, "events")
    latency, sizes = program.metrics.histograms
    assert (latency.map, latency.bucket_type, latency.sum_key) == ("lat", "exp2", 27)
    assert (sizes.bucket_keys, sizes.sum_key) == ([1, 10, 100], 101)


def test_v1_errors_name_v1_fields(tmp_path):
    bad = V1.replace("          table: counts\n", "          tabel: counts\n")
    with pytest.raises(ConfigError) as err:
        load_file(write(tmp_path, bad))
    assert str(err.value) == (
        f'{tmp_path / "v1.yaml"}: program "timers": metrics.counters[0].tabel: unknown field'
    )


def test_v1_perf_event_without_an_equivalent_is_refused(tmp_path):
    bad = V1.replace(
        "        name: 0\n        target: on_sample", "        name: 3\n        target: on_sample"
    )
    with pytest.raises(ConfigError) as err:
        load_file(write(tmp_path, bad))
    assert str(err.value) == (
        f'{tmp_path / "v1.yaml"}: program "timers": '
        "perf_events: sample_frequency is supported for cpu-clock only"
    )


def test_native_kaddrs_alone_do_not_make_a_file_v1(tmp_path):
    path = write(tmp_path, "programs: [{name: n, code: 'int x;', kaddrs: [do_sys_openat2]}]")
    [spec] = load_file(path)
    assert (spec.program.namespace, spec.program.kaddrs) == ("bcc", ["do_sys_openat2"])


def refusal(tmp_path: Path, old: str, new: str) -> str:
    """The error of V1 with `old` replaced by `new`, without the file and program prefix."""
    assert old in V1
    with pytest.raises(ConfigError) as err:
        load_file(write(tmp_path, V1.replace(old, new)))
    prefix = f'{tmp_path / "v1.yaml"}: program "timers": '
    assert str(err.value).startswith(prefix)
    return str(err.value)[len(prefix) :]


def test_v1_decoders_differing_from_ours_run_as_v1(tmp_path):
    text = V1.replace(
        "            - {name: comm, size: 16, decoders: [{name: string}]}",
        "            - {name: comm, size: 16, decoders: [{name: string}, {name: dname},"
        " {name: static_map, static_map: {a: b}, allow_unknown: true},"
        " {name: regexp, regexps: [x]}]}",
    )
    [spec] = load_file(write(tmp_path, text))
    counters = spec.program.metrics.counters
    assert [d.options for d in counters[0].labels[0].decoders] == [{"name": "ksym", "v1": True}]
    assert [d.options for d in counters[1].labels[0].decoders] == [
        {"name": "string"},
        {"name": "dname", "v1": True},
        {"name": "static_map", "static_map": {"a": "b"}, "allow_unknown": True},
        {"name": "regexp", "regexps": ["x"]},
    ]


def test_v1_decoder_names_and_keys_are_v1s(tmp_path):
    where = "metrics.counters[0].labels[0].decoders[0]"
    assert refusal(tmp_path, "- name: ksym", "- name: errno") == (
        f"{where}.name: must be one of cgroup, dname, inet_ip, ksym, majorminor, regexp,"
        " static_map, string, uint (got 'errno')"
    )
    assert refusal(tmp_path, "- name: ksym", "- {name: ksym, kallsyms: /k}") == (
        f"{where}.kallsyms: unknown field"
    )
    assert refusal(tmp_path, "- name: ksym", "- {name: ksym, regexps: [x]}") == (
        f"{where}.regexps: not an option of the ksym decoder"
    )
    assert refusal(tmp_path, "- name: ksym", "- name: static_map") == (
        f"{where}.static_map: required (a non-empty mapping) for static_map"
    )
    assert refusal(tmp_path, "- name: ksym", "- name: regexp") == (
        f"{where}.regexps: required (a non-empty list) for regexp"
    )


def test_v1_perf_map_flush_duration_is_refused(tmp_path):
    assert refusal(
        tmp_path,
        "          perf_map: events\n",
        "          perf_map: events\n          perf_map_flush_duration: 1h\n",
    ).startswith("metrics.counters[1].perf_map_flush_duration: not supported:")


def test_v1_histogram_keys(tmp_path):
    [spec] = load_file(
        write(tmp_path, V1.replace("bucket_multiplier: 0.000001", "bucket_multiplier: 0"))
    )
    assert spec.program.metrics.histograms[0].bucket_multiplier == 1.0  # v1's "not given"
    assert refusal(tmp_path, "bucket_max: 26", "bucket_max: 0") == (
        "metrics.histograms[0].bucket_max: must be above bucket_min (v1 refused zero buckets)"
    )


def test_v1_program_needs_probes_and_code(tmp_path):
    start, end = V1.index("    kprobes:\n"), V1.index("    kaddrs:\n")
    assert refusal(tmp_path, V1[start:end], "") == (
        "give at least one of kprobes, kretprobes, tracepoints, raw_tracepoints, perf_events"
        " (as v1 required)"
    )
    assert refusal(tmp_path, "code: |\n      int x;\n", "code: ''\n") == (
        "code: String should have at least 1 character"
    )


def test_v1_counters_without_total_keep_their_sample_name(tmp_path):
    [spec] = load_file(write(tmp_path, V1.replace("name: events_total", "name: oom_kills")))
    counters = spec.program.metrics.counters
    assert [(c.name, c.untyped) for c in counters] == [
        ("timer_start_total", False),
        ("oom_kills", True),
    ]
