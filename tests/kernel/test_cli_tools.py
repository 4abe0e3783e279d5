"""`bcc_exporter list` and `bcc_exporter snapshot` on the real kernel."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from ..conftest import REPO, run_cli
from . import workload

FALLBACK = """
programs:
  - name: fallback
    code: |
      BPF_HASH(calls, u32, u64);
      int on_getppid(void *ctx) { u32 zero = 0; calls.increment(zero); return 0; }
    probes:
      - function: on_getppid
        attach: [kprobe:__x64_sys_getppid, tracepoint:syscalls:sys_enter_getppid]
    metrics:
      counters:
        - name: calls_total
          help: getppid calls.
          map: calls
          labels: [{name: slot, size: 4, decoders: [{name: uint}]}]
"""


def test_list_says_which_probe_this_kernel_would_use(write_config):
    done = run_cli("list", f"--config.file={write_config('fallback', FALLBACK)}")
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()[:2]
    assert first == "fallback: available"
    if not os.path.exists("/sys/bus/event_source/devices/kprobe"):
        assert second == (
            "  on_getppid: tracepoint:syscalls:sys_enter_getppid "
            "(not kprobe:__x64_sys_getppid: kernel has no kprobes: CONFIG_KPROBES is off "
            "(no /sys/bus/event_source/devices/kprobe, no /sys/kernel/tracing/kprobe_events))"
        )


def test_list_without_flags_covers_every_builtin_program():
    done = run_cli("list")
    listed = [line.split(":")[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    builtins = sorted(p.stem for p in (REPO / "config").glob("*.yaml"))
    assert sorted(listed) == builtins


def test_snapshot_prints_what_one_program_saw_in_its_window():
    comm = workload.unique_comm()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "snapshot", "opens", "--duration", "3s"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    # The window opens once the program is attached and its counts are taken.
    for line in proc.stderr:
        if "snapshot: watching" in line:
            break
    workload.run(comm, "for _ in range(23):\n    os.close(os.open('/etc/hostname', 0))\n")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines()[2:] if line.strip()}
    assert rows.get(comm) == "23", out


def test_loader_jobs_bounds_the_compile_workers_running_at_once():
    done = run_cli("--config.check", "--loader.jobs=1", "--config.names=syscalls,pagefaults,execs")
    assert done.returncode == 0, done.stderr
    # One worker at a time: each program is ready before the next one starts compiling.
    events = [
        (event, name)
        for name, event in re.findall(r'program "(\w+)": (compiling|ready)', done.stderr)
    ]
    assert [event for event, _ in events] == ["compiling", "ready"] * 3, done.stderr
    assert [name for _, name in events[::2]] == [name for _, name in events[1::2]]
