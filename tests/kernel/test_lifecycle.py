"""Lifecycle: SIGTERM and SIGINT end a daemon serving the default programs with exit 0,
leaving nothing attached (how long that takes is a figure of bench/, not a timed test); a
uprobe whose file is deleted at runtime is reported, not fatal."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import bpftool_show, still_loaded


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_default_programs_leaving_nothing_attached(daemon, sig):
    exporter = daemon()  # no config flag: every built-in program that is on by default
    progs = exporter.program_ids()
    assert len(progs) >= 20, "the default programs are running"
    links = {link["id"] for link in bpftool_show("link") if link.get("prog_id") in progs}
    assert links, "tracepoints of `probes:` entries are attached through BPF links"

    exporter.proc.send_signal(sig)
    assert exporter.proc.wait(timeout=30) == 0, exporter.log()
    assert "stopped; every program detached" in exporter.log()
    assert not still_loaded(links, "link")
    assert not still_loaded(progs, "prog")


PROBED = r"""
__attribute__((noinline)) void bccx_probed(void) { __asm__ volatile(""); }
int main(void) { bccx_probed(); return 0; }
"""

UPROBE = """
programs:
  - name: on_binary
    code: |
      BPF_ARRAY(calls, u64, 1);
      int on_call(void *ctx) {
          u32 zero = 0;
          calls.increment(zero);
          return 0;
      }
    probes:
      - function: on_call
        attach: uprobe:%s:bccx_probed
    metrics:
      counters:
        - name: probed_calls_total
          help: calls of bccx_probed in the test's binary.
          map: calls
          labels:
            - {name: slot, size: 4, decoders: [{name: uint}]}
"""
K = 23


def build_probed(directory: Path) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build the probed binary"
    source = directory / "probed.c"
    source.write_text(PROBED)
    binary = directory / "probed"
    subprocess.run([gcc, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def run_times(binary: Path, times: int) -> None:
    for _ in range(times):
        subprocess.run([str(binary)], check=True)


def test_a_deleted_uprobe_target_is_reported_not_fatal(daemon, write_config, tmp_path):
    binary = build_probed(tmp_path)
    spare = tmp_path / "spare"
    shutil.copy(binary, spare)
    exporter = daemon(f"--config.file={write_config('uprobe', UPROBE % binary)}")
    calls = ("bcc_probed_calls_total", frozenset({("slot", "0")}))
    missing = (
        "bcc_exporter_probe_target_missing",
        frozenset(
            {
                ("program", "on_binary"),
                ("function", "on_call"),
                ("probe", f"uprobe:{binary}:bccx_probed"),
            }
        ),
    )
    run_times(binary, K)
    samples = exporter.scrape()
    assert (samples[calls], samples[missing]) == (K, 0)
    progs = exporter.program_ids()

    binary.unlink()
    time.sleep(1.1)  # targets are looked at once a second at most
    samples = exporter.scrape()
    assert (samples[calls], samples[missing]) == (K, 1)  # still serving, counts kept

    # A new file at the path (a package upgrade) is not the probed one: still reported, and
    # its runs are not counted.
    shutil.copy(spare, binary)
    run_times(binary, 3)
    time.sleep(1.1)
    for _ in range(3):
        samples = exporter.scrape()
        assert (samples[calls], samples[missing]) == (K, 1)
    assert exporter.log().count("was deleted or replaced") == 1

    assert exporter.stop() == 0
    assert not still_loaded(progs, "prog")
    uprobes = Path("/sys/kernel/tracing/uprobe_events").read_text()
    assert str(binary) not in uprobes
