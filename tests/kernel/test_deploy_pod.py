"""The DaemonSet's container as the kubelet starts it: uid 0 holding exactly the pod's added
capabilities, no new privileges. Every default program runs, and the serving process becomes
nobody:nogroup with nothing left (docs/security.md)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import select

from ..conftest import Daemon, status
from .conftest import REPO

NOBODY = "65534"


def pod_capabilities() -> list[str]:
    docs: list[Any] = list(
        yaml.safe_load_all((REPO / "deploy/kubernetes/daemonset.yaml").read_text())
    )
    [container] = docs[0]["spec"]["template"]["spec"]["containers"]
    security = container["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"] and security["runAsUser"] == 0
    return list(security["capabilities"]["add"])


class PodDaemon(Daemon):
    def __init__(self, caps: list[str], log: Path) -> None:
        self.caps = ",".join(f"+{c.lower()}" for c in caps)
        super().__init__([], log)

    def command(self, args: list[str]) -> list[str]:
        return [
            "setpriv",
            "--inh-caps=-all",
            f"--bounding-set=-all,{self.caps}",
            "--no-new-privs",
            *super().command(args),
        ]


def test_the_pods_capabilities_run_every_default_program_and_serve_as_nobody(tmp_path: Path):
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run the daemon as the kubelet would")
    daemon = PodDaemon(pod_capabilities(), tmp_path / "daemon.log")
    try:
        server = status(daemon.proc.pid)
        assert server["Uid"].split() == [NOBODY] * 4 and server["Gid"].split() == [NOBODY] * 4
        assert int(server["CapEff"], 16) == int(server["CapPrm"], 16) == 0
        enabled = {
            dict(labels)["program"]
            for (name, labels), value in daemon.scrape().items()
            if name == "bcc_exporter_enabled_programs" and value == 1
        }
        assert enabled == {spec.name for spec in select(None, None, [])}, daemon.log()
    finally:
        assert daemon.stop() == 0, daemon.log()
