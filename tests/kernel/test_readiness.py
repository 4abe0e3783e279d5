"""/-/ready: 503 while a configured program failed to compile, 200 once every program that can
run here is attached; /-/healthy (and its alias /healthz) 200 all along."""

from __future__ import annotations

import urllib.error
import urllib.request

FINE = """
      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { return 0; }
"""
BROKEN = """
      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { return undeclared_name; }
"""
CONFIG = """
programs:
  - name: fine
    code: |{fine}
  - name: flaky
    code: |{flaky}
"""


def status(exporter, path: str) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    request = urllib.request.Request(exporter.url + path)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_ready_only_once_every_program_attached(daemon, write_config):
    config = write_config("ready", CONFIG.format(fine=FINE, flaky=BROKEN))
    exporter = daemon(f"--config.file={config}", "--web.enable-lifecycle")
    code, body = status(exporter, "/-/ready")
    assert code == 503
    assert body.startswith(b"not ready: flaky: ")
    assert status(exporter, "/-/healthy") == (200, b"ok\n")
    assert status(exporter, "/healthz") == (200, b"ok\n")

    write_config("ready", CONFIG.format(fine=FINE, flaky=FINE))
    request = urllib.request.Request(exporter.url + "/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
    assert status(exporter, "/-/ready") == (200, b"ready\n")
    assert status(exporter, "/-/healthy") == (200, b"ok\n")


SKIPPED = """
programs:
  - name: fine
    code: |{fine}
  - name: elsewhere
    probes:
      - function: on_event
        attach: tracepoint:no_such_subsystem:no_such_event
    code: |
      int on_event(void *ctx) {{ return 0; }}
"""


def test_a_program_whose_probe_this_kernel_lacks_does_not_count(daemon, write_config):
    exporter = daemon(f"--config.file={write_config('ready', SKIPPED.format(fine=FINE))}")
    assert "skipped" in exporter.log()
    assert status(exporter, "/-/ready") == (200, b"ready\n")
