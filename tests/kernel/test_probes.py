"""Each probe kind attaches for real, or fails with the reason this kernel gives."""

from __future__ import annotations

import ctypes.util
import uuid
from pathlib import Path

import pytest

from . import workload

K = 23
EVENT_SOURCES = Path("/sys/bus/event_source/devices")


def libc_path() -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if "/libc.so" in path or "/libc-" in path:
            return path
    raise AssertionError(f"libc not mapped; ctypes finds {ctypes.util.find_library('c')}")


COMM_COUNTER = """
programs:
  - name: probe_{kind}
    code: |
      struct key_t {{ char comm[16]; }};
      BPF_HASH(hits, struct key_t, u64);
      int on_hit(void *ctx) {{
          struct key_t key = {{}};
          bpf_get_current_comm(&key.comm, sizeof(key.comm));
          hits.increment(key);
          return 0;
      }}
    probes:
      - function: on_hit
        attach: {attach}
    metrics:
      counters:
        - name: probe_hits_total
          help: Probe hits by comm.
          map: hits
          labels:
            - {{name: comm, size: 16, decoders: [{{name: string}}]}}
"""


def comm_counter(kind: str, attach: list[str]) -> str:
    return COMM_COUNTER.format(kind=kind, attach=attach)


def test_uprobe_on_libc_counts_every_call(daemon, write_config):
    config = comm_counter("uprobe", [f"uprobe:{libc_path()}:getppid"])
    exporter = daemon(f"--config.file={write_config('uprobe', config)}")
    comm = "bccu" + uuid.uuid4().hex[:8]
    workload.run(
        comm,
        f"""
        for _ in range({K}):
            libc.getppid()
    """,
    )
    assert exporter.value("bcc_probe_hits_total", comm=comm) == K


def test_uretprobe_counts_every_return(daemon, write_config):
    config = comm_counter("uretprobe", [f"uretprobe:{libc_path()}:getppid"])
    exporter = daemon(f"--config.file={write_config('uretprobe', config)}")
    comm = "bccr" + uuid.uuid4().hex[:8]
    workload.run(
        comm,
        f"""
        for _ in range({K}):
            libc.getppid()
    """,
    )
    assert exporter.value("bcc_probe_hits_total", comm=comm) == K


def test_raw_tracepoint_counts_syscalls_of_a_comm(daemon, write_config):
    # raw_syscalls:sys_enter fires for every syscall; count only the ones after the prelude.
    config = """
programs:
  - name: raw
    code: |
      struct key_t { char comm[16]; };
      BPF_HASH(hits, struct key_t, u64);
      RAW_TRACEPOINT_PROBE(sys_enter) {
          if (ctx->args[1] != 110)  // getppid on x86_64
              return 0;
          struct key_t key = {};
          bpf_get_current_comm(&key.comm, sizeof(key.comm));
          hits.increment(key);
          return 0;
      }
    metrics:
      counters:
        - name: probe_hits_total
          help: getppid calls by comm.
          map: hits
          labels:
            - {name: comm, size: 16, decoders: [{name: string}]}
"""
    exporter = daemon(f"--config.file={write_config('raw', config)}")
    comm = "bccq" + uuid.uuid4().hex[:8]
    workload.run(
        comm,
        f"""
        for _ in range({K}):
            os.getppid()
    """,
    )
    assert exporter.value("bcc_probe_hits_total", comm=comm) == K


def test_profile_samples_a_busy_process_at_its_rate(daemon, write_config):
    exporter = daemon(
        f"--config.file={write_config('profile', comm_counter('profile', ['profile:hz:49']))}"
    )
    comm = "bccp" + uuid.uuid4().hex[:8]
    cpu_seconds = float(
        workload.run(
            comm,
            """
        import time
        start = time.process_time()
        while time.process_time() - start < 1.0:
            pass
        print(time.process_time())
    """,
        )
    )
    samples = exporter.value("bcc_probe_hits_total", comm=comm)
    # A 49 Hz cpu-clock sample lands in whatever runs on that CPU: expect 49 per CPU-second
    # the child ran after naming itself, within timer jitter.
    assert 0.8 * 49 * cpu_seconds - 3 <= samples <= 49 * cpu_seconds + 3


def test_software_event_counts_page_faults(daemon, write_config):
    config = comm_counter("software", ["software:page-faults:1"])
    exporter = daemon(f"--config.file={write_config('software', config)}")
    comm = "bccf" + uuid.uuid4().hex[:8]
    pages = 230
    workload.run(
        comm,
        f"""
        import mmap
        m = mmap.mmap(-1, {pages} * 4096)
        for i in range({pages}):
            m[i * 4096] = 1  # first touch of each page faults it in
    """,
    )
    assert exporter.value("bcc_probe_hits_total", comm=comm) >= pages


def test_alternatives_fall_back_from_dynamic_to_static_and_say_why(daemon, write_config):
    # Listed dynamic-first here on purpose: the kprobe is tried, refused, and the tracepoint used.
    config = comm_counter(
        "fallback", ["kprobe:__x64_sys_getppid", "tracepoint:syscalls:sys_enter_getppid"]
    )
    exporter = daemon(f"--config.file={write_config('fallback', config)}")
    comm = "bccb" + uuid.uuid4().hex[:8]
    workload.run(
        comm,
        f"""
        for _ in range({K}):
            os.getppid()
    """,
    )
    assert exporter.value("bcc_probe_hits_total", comm=comm) == K
    assert (
        exporter.value(
            "bcc_exporter_program_attached",
            program="probe_fallback",
            function="on_hit",
            probe="tracepoint:syscalls:sys_enter_getppid",
        )
        == 1
    )
    if not (EVENT_SOURCES / "kprobe").exists():
        assert "kprobe:__x64_sys_getppid: kernel has no kprobes" in exporter.log()


def kprobes_available() -> bool:
    return (EVENT_SOURCES / "kprobe").exists() or Path("/sys/kernel/tracing/kprobe_events").exists()


@pytest.mark.skipif(not kprobes_available(), reason="kernel has no kprobes (CONFIG_KPROBES off)")
def test_kprobe_counts_calls(daemon, write_config):
    config = comm_counter("kprobe", ["kprobe:__x64_sys_getppid"])
    exporter = daemon(f"--config.file={write_config('kprobe', config)}")
    comm = "bcck" + uuid.uuid4().hex[:8]
    workload.run(
        comm,
        f"""
        for _ in range({K}):
            os.getppid()
    """,
    )
    assert exporter.value("bcc_probe_hits_total", comm=comm) == K


@pytest.mark.parametrize(
    "kind, probe, reason",
    [
        ("kprobe", "kprobe:__x64_sys_getppid", "kernel has no kprobes: CONFIG_KPROBES is off"),
        (
            "kretprobe",
            "kretprobe:__x64_sys_getppid",
            "kernel has no kprobes: CONFIG_KPROBES is off",
        ),
        ("hardware", "hardware:cycles:100000", "no hardware perf events on this machine"),
    ],
)
def test_unavailable_probe_fails_its_program_with_the_reason(
    daemon, write_config, kind, probe, reason
):
    available = kprobes_available() if kind != "hardware" else (EVENT_SOURCES / "cpu").exists()
    if available:
        pytest.skip(f"this machine has {kind} probes; the refusal path cannot be seen here")
    exporter = daemon(f"--config.file={write_config(kind, comm_counter(kind, [probe]))}")
    assert exporter.value("bcc_exporter_enabled_programs", program=f"probe_{kind}") == 0
    assert (
        f'program "probe_{kind}": function on_hit: no probe could be attached ({probe}: {reason}'
        in exporter.log()
    )
