"""deploy/systemd/bcc_exporter.service's privileges are enough: the real daemon, with the
default config, run as a non-root uid holding exactly the unit's capabilities (setpriv stands in
for systemd, which is not PID 1 here), attaches every default program, counts, and reloads."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from exporter import capabilities
from exporter.config import select

from ..conftest import Daemon, cannot_run, getppid_counter
from . import workload
from .conftest import REPO

UNIT = REPO / "deploy" / "systemd" / "bcc_exporter.service"
# What systemd's DynamicUser picks from (61184-65519); no passwd entry is needed.
DYNAMIC_UID = 61184
# The one capability of the unit a test runner may lack: it only raises RLIMIT_MEMLOCK, which
# kernels >= 5.11 no longer charge maps to, so running without it proves as much.
OPTIONAL = {"CAP_SYS_RESOURCE"}


def unit_service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def unit_capabilities(key: str) -> set[str]:
    return set(unit_service()[key].split())


def test_unit_runs_as_a_dynamic_user_with_ambient_capabilities_only() -> None:
    service = unit_service()
    assert service["DynamicUser"] == "yes"
    assert "User" not in service
    ambient = unit_capabilities("AmbientCapabilities")
    assert ambient == unit_capabilities("CapabilityBoundingSet")
    assert capabilities.parse(",".join(ambient))  # every name is a real capability


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        cannot_run("systemd-analyze is not installed")
    # verify checks that ExecStart exists: point the unit at this checkout instead of /opt.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/bcc_exporter", str(REPO)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


class UnitDaemon(Daemon):
    """The daemon under setpriv: uid/gid DYNAMIC_UID, `caps` ambient, inheritable and bounding,
    nothing else, no new privileges (as DynamicUser implies). Started like Daemon, only wrapped."""

    def __init__(self, caps: set[str], log: Path, args: list[str] | None = None) -> None:
        self.caps = ",".join(f"+{c.removeprefix('CAP_').lower()}" for c in sorted(caps))
        super().__init__(args or [], log)

    def command(self, args: list[str]) -> list[str]:
        return [
            "setpriv",
            f"--reuid={DYNAMIC_UID}",
            f"--regid={DYNAMIC_UID}",
            "--clear-groups",
            f"--inh-caps=-all,{self.caps}",
            f"--ambient-caps=-all,{self.caps}",
            f"--bounding-set=-all,{self.caps}",
            "--no-new-privs",
            *super().command(args),
        ]


def test_the_units_capabilities_run_every_default_program_as_a_non_root_user(
    tmp_path: Path,
) -> None:
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run the daemon as the unit would")
    wanted = unit_capabilities("AmbientCapabilities")
    bounding = capabilities.from_mask(int(_status("CapBnd"), 16))
    unavailable = wanted - set(capabilities.names(bounding))
    assert unavailable <= OPTIONAL, f"this runner cannot grant {sorted(unavailable)}"
    daemon = UnitDaemon(wanted - unavailable, tmp_path / "daemon.log")
    try:
        server = daemon.proc.pid
        assert _status("Uid", server).split()[:2] == [str(DYNAMIC_UID)] * 2
        # The serving process gave up every capability it was started with.
        assert int(_status("CapEff", server), 16) == 0

        defaults = {spec.name for spec in select(None, None, [])}
        samples = daemon.scrape()
        enabled = {
            dict(labels)["program"]: value
            for (name, labels), value in samples.items()
            if name == "bcc_exporter_enabled_programs"
        }
        assert enabled == dict.fromkeys(defaults, 1.0), daemon.log()

        # A known answer through a default program: N failed opens by a comm of our own.
        comm = workload.unique_comm()
        opens = 37
        workload.run(
            comm,
            """
            for _ in range(int(sys.argv[2])):
                try:
                    open("/nonexistent/deploy-test", "rb")
                except FileNotFoundError:
                    pass
            """,
            str(opens),
        )
        assert daemon.value("bcc_opens_total", comm=comm, result="ENOENT") == opens

        # SIGHUP (the unit's ExecReload) reloads as this user too, and keeps the counts.
        before = daemon.value("bcc_exporter_config_last_reload_success_timestamp_seconds")
        daemon.proc.send_signal(signal.SIGHUP)
        _wait_for(
            lambda: (
                daemon.value("bcc_exporter_config_last_reload_success_timestamp_seconds") > before
            ),
            daemon,
        )
        assert daemon.value("bcc_exporter_config_last_reload_successful") == 1
        assert daemon.value("bcc_opens_total", comm=comm, result="ENOENT") == opens
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_a_config_only_root_can_read_works_at_start_and_on_every_reload(tmp_path: Path) -> None:
    """The spawner reads the configs, with the unit's CAP_DAC_READ_SEARCH: a 0600 root file
    serves, and reloads, though the serving process (the dynamic user) could not read it."""
    config = tmp_path / "secret.yaml"
    config.write_text(getppid_counter("secret"))
    config.chmod(0o600)
    wanted = unit_capabilities("AmbientCapabilities") - OPTIONAL
    daemon = UnitDaemon(wanted, tmp_path / "daemon.log", [f"--config.file={config}"])
    try:
        assert daemon.value("bcc_exporter_enabled_programs", program="secret") == 1
        for attempt in range(2):
            before = daemon.value("bcc_exporter_config_last_reload_success_timestamp_seconds")
            config.write_text(getppid_counter("secret", metric=f"calls{attempt}_total"))
            daemon.proc.send_signal(signal.SIGHUP)
            _wait_for(
                lambda before=before: (
                    daemon.value("bcc_exporter_config_last_reload_success_timestamp_seconds")
                    > before
                ),
                daemon,
            )
            assert daemon.value("bcc_exporter_config_last_reload_successful") == 1
            for _ in range(23):
                os.getppid()
            assert daemon.value(f"bcc_calls{attempt}_total", slot="0") >= 23
    finally:
        assert daemon.stop() == 0, daemon.log()


def _status(field: str, pid: int | str = "self") -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == field:
            return value.strip()
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _wait_for(condition, daemon: Daemon, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.1)
