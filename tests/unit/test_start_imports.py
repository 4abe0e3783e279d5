"""What the processes on the way to the first scrape import (issue 18): each heavy module
imported before the spawner starts, or in the process every compile forks from, is start-up
time and memory. The checks import in a fresh interpreter, as the daemon starts."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pydantic", "yaml", "prometheus_client", "uvicorn", "httptools", "bcc")


def imported(code: str) -> list[str]:
    code += "; import sys; print(' '.join(sorted(sys.modules)))"
    return subprocess.run(
        [sys.executable, "-I", "-c", code], check=True, capture_output=True, text=True, cwd="/"
    ).stdout.split()


def test_the_command_line_starts_the_spawner_before_the_heavy_imports():
    """exporter.launch and exporter.cli, up to daemon.begin: the flags, the privileged
    preparation and the spawner's client."""
    found = imported("import exporter.launch, exporter.cli, exporter.daemon")
    heavy = (*HEAVY, "exporter.config", "exporter.supervisor", "exporter.metrics.", "exporter.http")
    assert not [m for m in found if m.startswith(heavy)]


def test_the_compile_worker_imports_no_config_models():
    """Every compile forks from it (bcc is imported there on purpose, after this import)."""
    found = imported("import exporter.compiler.worker")
    heavy = (*HEAVY, "exporter.config", "exporter.loader")
    assert not [m for m in found if m.startswith(heavy)]
