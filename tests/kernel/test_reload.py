"""Reload (SIGHUP): unchanged programs keep their counts, a broken config changes nothing."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..conftest import still_loaded

COUNTER = """
programs:
  - name: {name}
    code: |
      BPF_ARRAY(calls, u64, 1);
      TRACEPOINT_PROBE(syscalls, sys_enter_{syscall}) {{
          if (bpf_get_current_pid_tgid() >> 32 != {tgid})
              return 0;
          u32 zero = 0;
          calls.increment(zero);
          return 0;
      }}
    metrics:
      counters:
        - name: {name}_calls_total
          help: {help}
          map: calls
          labels:
            - {{name: slot, size: 4, decoders: [{{name: uint}}]}}
"""


def write(directory: Path, name: str, syscall: str, help: str = "calls") -> None:
    text = COUNTER.format(name=name, syscall=syscall, tgid=os.getpid(), help=help)
    (directory / f"{name}.yaml").write_text(text)


def reload(exporter) -> float:  # type: ignore[no-untyped-def]
    """SIGHUP, then wait for the reload to finish; returns last_reload_successful."""
    stamp = "bcc_exporter_config_last_reload_success_timestamp_seconds"
    succeeded, failed = exporter.value(stamp), exporter.log().count("reload failed")
    exporter.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while exporter.value(stamp) == succeeded and exporter.log().count("reload failed") == failed:
        assert time.monotonic() < deadline, exporter.log()
        time.sleep(0.1)
    return exporter.value("bcc_exporter_config_last_reload_successful")


def test_reload_keeps_unchanged_counts_swaps_changed_and_drops_removed(daemon, tmp_path):
    write(tmp_path, "kept", "getppid")
    write(tmp_path, "changed", "getuid")
    write(tmp_path, "removed", "getgid")
    exporter = daemon(f"--config.dir={tmp_path}")
    for _ in range(23):
        os.getppid()
    kept_ids, changed_ids, removed_ids = (
        exporter.program_ids(p) for p in ("kept", "changed", "removed")
    )

    write(tmp_path, "changed", "getuid", help="calls, new help")
    (tmp_path / "removed.yaml").unlink()
    assert reload(exporter) == 1
    for _ in range(11):
        os.getppid()
    samples = exporter.scrape()
    assert samples[("bcc_kept_calls_total", frozenset({("slot", "0")}))] == 23 + 11
    assert exporter.program_ids("kept") == kept_ids  # the same program, never recompiled
    assert exporter.program_ids("changed") and exporter.program_ids("changed") != changed_ids
    assert ("bcc_exporter_enabled_programs", frozenset({("program", "removed")})) not in samples
    # The removed and the replaced ones are detached.
    assert not still_loaded(removed_ids | changed_ids, "prog")


def test_a_broken_reload_keeps_everything_running(daemon, tmp_path):
    write(tmp_path, "kept", "getppid")
    write(tmp_path, "changed", "getuid")
    exporter = daemon(f"--config.dir={tmp_path}")
    before = exporter.value("bcc_exporter_config_last_reload_success_timestamp_seconds")
    changed_ids = exporter.program_ids("changed")
    (tmp_path / "changed.yaml").write_text(
        (tmp_path / "changed.yaml").read_text().replace("calls.increment(zero);", "nonsense;")
    )
    assert reload(exporter) == 0
    assert "reload failed, the running programs are unchanged" in exporter.log()
    for _ in range(23):
        os.getppid()
    assert exporter.value("bcc_kept_calls_total", slot="0") == 23
    assert exporter.program_ids("changed") == changed_ids
    assert exporter.value("bcc_exporter_config_last_reload_success_timestamp_seconds") == before

    (tmp_path / "kept.yaml").write_text("programs: [")  # a config that does not parse
    assert reload(exporter) == 0
    for _ in range(11):
        os.getppid()
    assert exporter.value("bcc_kept_calls_total", slot="0") == 34


def post(exporter, path: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    request = urllib.request.Request(exporter.url + path, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_http_reload_only_with_the_lifecycle_flag(daemon, tmp_path):
    write(tmp_path, "kept", "getppid")
    closed = daemon(f"--config.dir={tmp_path}")
    assert post(closed, "/-/reload") == (403, "Lifecycle API is not enabled.\n")
    exporter = daemon(f"--config.dir={tmp_path}", "--web.enable-lifecycle")
    for _ in range(23):
        os.getppid()
    write(tmp_path, "added", "getuid")
    assert post(exporter, "/-/reload") == (200, "")
    assert exporter.value("bcc_exporter_enabled_programs", program="added") == 1
    assert exporter.value("bcc_kept_calls_total", slot="0") == 23  # kept through the reload
    (tmp_path / "added.yaml").write_text("programs: [")
    status, body = post(exporter, "/-/reload")
    assert status == 500 and body.startswith("failed to reload config: ")
    assert "invalid YAML" in body
