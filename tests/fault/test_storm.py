"""Event storm: 10 000 000 syscalls in a tight C loop are counted exactly.

The storm is a small C program (compiled here with gcc) that waits on its stdin, then calls
syscall(SYS_getppid) EVENTS times. It is started first, held, so that its pid can be compiled
into the BPF program as a filter; then the daemon starts, the storm is let go, and the exported
delta must be EVENTS, not one more or less: a per-CPU array needs no atomics and drops nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

EVENTS = 10_000_000

STORM_C = r"""
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = atol(argv[1]);
    char go;
    if (read(0, &go, 1) != 1)  /* held until the test says go */
        return 2;
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    return 0;
}
"""

CONFIG = """
programs:
  - name: storm
    namespace: fault
    cflags: ["-DTARGET_TGID={tgid}"]
    code: |
      BPF_PERCPU_ARRAY(calls, u64, 1);
      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {{
          if ((bpf_get_current_pid_tgid() >> 32) != TARGET_TGID)
              return 0;
          u32 zero = 0;
          calls.increment(zero);
          return 0;
      }}
    metrics:
      counters:
        - name: storm_calls_total
          help: getppid calls of the storm process.
          map: calls
          labels:
            - {{name: slot, size: 4, decoders: [{{name: uint}}]}}
"""


@pytest.fixture
def storm_binary(tmp_path: Path) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build the storm program"
    source, binary = tmp_path / "storm.c", tmp_path / "storm"
    source.write_text(STORM_C)
    subprocess.run([gcc, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def test_ten_million_events_counted_exactly(daemon, write_config, storm_binary, capsys):
    storm = subprocess.Popen([str(storm_binary), str(EVENTS)], stdin=subprocess.PIPE)
    try:
        exporter = daemon(f"--config.file={write_config('storm', CONFIG.format(tgid=storm.pid))}")
        before = exporter.value("fault_storm_calls_total", slot="0")
        assert before == 0  # nothing before the storm: an untouched array slot is no series
        assert storm.stdin is not None
        began = time.monotonic()
        storm.stdin.write(b"g")
        storm.stdin.close()
        assert storm.wait(timeout=300) == 0
        took = time.monotonic() - began
    finally:
        if storm.poll() is None:
            storm.kill()
            storm.wait()
    after = exporter.value("fault_storm_calls_total", slot="0")
    with capsys.disabled():
        print(f"\nstorm: {EVENTS} getppid syscalls counted in {took:.2f} s")
    assert after - before == EVENTS
