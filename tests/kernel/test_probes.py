"""Each probe kind attaches for real, or fails with the reason this kernel gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import workload
from .histograms import cpu_ticks, most_time_in

K = 23
EVENT_SOURCES = Path("/sys/bus/event_source/devices")
GETPPID_K_TIMES = f"""
for _ in range({K}):
    libc.getppid()
"""


def libc_path() -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if "/libc.so" in path or "/libc-" in path:
            return path
    raise AssertionError("libc is not mapped into this process")


def kprobes_available() -> bool:
    return (EVENT_SOURCES / "kprobe").exists() or Path("/sys/kernel/tracing/kprobe_events").exists()


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


@pytest.fixture
def probe_hits(daemon, write_config):  # type: ignore[no-untyped-def]
    """Attach a comm counter to `attach`, run `body` under a unique comm; return (daemon, hits)."""

    def run(kind: str, attach: list[str], body: str):  # type: ignore[no-untyped-def]
        config = write_config(kind, COMM_COUNTER.format(kind=kind, attach=attach))
        exporter = daemon(f"--config.file={config}")
        comm = workload.unique_comm()
        printed = workload.run(comm, body)
        return exporter, exporter.value("bcc_probe_hits_total", comm=comm), printed

    return run


def test_uprobe_on_libc_counts_every_call(probe_hits):
    _, hits, _ = probe_hits("uprobe", [f"uprobe:{libc_path()}:getppid"], GETPPID_K_TIMES)
    assert hits == K


def test_uretprobe_counts_every_return(probe_hits):
    _, hits, _ = probe_hits("uretprobe", [f"uretprobe:{libc_path()}:getppid"], GETPPID_K_TIMES)
    assert hits == K


def test_raw_tracepoint_counts_syscalls_of_a_comm(daemon, write_config):
    # raw_syscalls:sys_enter fires for every syscall; this one keeps getppid only.
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
    comm = workload.unique_comm()
    workload.run(comm, GETPPID_K_TIMES)
    assert exporter.value("bcc_probe_hits_total", comm=comm) == K


def test_profile_samples_a_busy_process_at_its_rate(probe_hits):
    cpu = max(os.sched_getaffinity(0))
    ticks = [cpu_ticks(cpu)]
    exporter, samples, printed = probe_hits("profile", ["profile:hz:49"], workload.busy_second(cpu))
    ticks.append(cpu_ticks(cpu))
    missed = sum(
        value
        for (name, labels), value in exporter.scrape().items()
        if name == "bcc_exporter_program_recursion_misses_total"
    )
    # A 49 Hz cpu-clock sample lands in whatever runs on that CPU: 49 per second the child ran,
    # within what its breaks and its CPU's interrupts and stolen time allow, less what the
    # kernel skipped.
    least, most = workload.sampled(49, printed, most_time_in(*ticks, "irq", "softirq", "steal"))
    assert least - missed <= samples <= most, (least, missed, samples, most, printed)


def test_software_event_counts_page_faults(probe_hits):
    pages = 230
    touch_pages = f"""
import mmap
m = mmap.mmap(-1, {pages} * 4096)
for i in range({pages}):
    m[i * 4096] = 1  # the first touch of each page faults it in
"""
    _, faults, _ = probe_hits("software", ["software:page-faults:1"], touch_pages)
    assert faults >= pages


def test_alternatives_fall_back_from_dynamic_to_static_and_say_why(probe_hits):
    # Listed dynamic-first on purpose: the kprobe is tried, refused here, the tracepoint used.
    probes = ["kprobe:__x64_sys_getppid", "tracepoint:syscalls:sys_enter_getppid"]
    exporter, hits, _ = probe_hits("fallback", probes, GETPPID_K_TIMES)
    assert hits == K
    used = {
        dict(labels)["probe"]
        for (name, labels), _ in exporter.scrape().items()
        if name == "bcc_exporter_program_attached"
    }
    if kprobes_available():
        assert used == {"kprobe:__x64_sys_getppid"}
    else:
        assert used == {"tracepoint:syscalls:sys_enter_getppid"}
        assert "on_hit: skipped kprobe:__x64_sys_getppid: kernel has no kprobes" in exporter.log()


@pytest.mark.skipif(not kprobes_available(), reason="kernel has no kprobes (CONFIG_KPROBES off)")
def test_kprobe_counts_calls(probe_hits):
    _, hits, _ = probe_hits("kprobe", ["kprobe:__x64_sys_getppid"], GETPPID_K_TIMES)
    assert hits == K


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
        pytest.skip(f"this machine has {kind} probes; the refusal cannot be seen here")
    config = write_config(kind, COMM_COUNTER.format(kind=kind, attach=[probe]))
    exporter = daemon(f"--config.file={config}")
    assert exporter.value("bcc_exporter_enabled_programs", program=f"probe_{kind}") == 0
    # A kernel without the probe is expected on some nodes: one warning, not an error.
    [line] = [line for line in exporter.log().splitlines() if f'"probe_{kind}"' in line][-1:]
    assert " WARN  " in line
    assert (
        f'program "probe_{kind}": skipped: function on_hit: no probe could be attached '
        f"({probe}: {reason}"
    ) in line


def test_usdt_probe_of_the_python_interpreter_counts_every_firing(probe_hits):
    # CPython's `python:gc__start` (behind a semaphore the kernel sets while attached) fires
    # once per collection; the interpreter running the workload is this one.
    python = str(Path(sys.executable).resolve())
    collect = f"""
import gc
gc.disable()  # no collections but ours
for _ in range({K}):
    gc.collect()
os._exit(0)  # nor the one at interpreter shutdown
"""
    _, hits, _ = probe_hits("usdt", [f"usdt:{python}:python:gc__start"], collect)
    assert hits == K


def test_usdt_probe_without_semaphore_goes_through_bcc(daemon, write_config, tmp_path):
    # libstdc++'s `libstdcxx:throw` has no semaphore: BCC enables it before compiling.
    libstdcxx = next(
        line.split()[-1]
        for line in subprocess.run(
            ["ldconfig", "-p"], check=True, capture_output=True, text=True
        ).stdout.splitlines()
        if "libstdc++.so.6 " in line and "x86-64" in line
    )
    source = tmp_path / "throws.cc"
    source.write_text(
        f"int main() {{ for (int i = 0; i < {K}; i++) try {{ throw i; }} catch (int) {{}} }}"
    )
    binary = tmp_path / workload.unique_comm()
    subprocess.run(["g++", "-O0", "-o", str(binary), str(source)], check=True)
    config = COMM_COUNTER.format(kind="usdt_bcc", attach=[f"usdt:{libstdcxx}:libstdcxx:throw"])
    exporter = daemon(f"--config.file={write_config('usdt_bcc', config)}")
    subprocess.run([str(binary)], check=True)
    assert exporter.value("bcc_probe_hits_total", comm=binary.name) == K
