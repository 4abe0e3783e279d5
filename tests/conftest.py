"""Kernel tests skip without root/BPF but fail under REQUIRE_BPF=1: CI never passes by skipping."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _bpf_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/sys/kernel/btf/vmlinux").exists() and not Path("/proc/kallsyms").exists():
        return "no BPF-capable kernel"
    if not Path("/sys/kernel/tracing/events").is_dir():
        return "tracefs is not mounted at /sys/kernel/tracing"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(REPO / "tests" / "kernel"):
            item.add_marker(pytest.mark.kernel)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is None:
        return
    reason = _bpf_unavailable()
    if reason is None:
        return
    if os.environ.get("REQUIRE_BPF") == "1":
        pytest.fail(f"REQUIRE_BPF=1 but kernel tests cannot run: {reason}")
    pytest.skip(reason)
