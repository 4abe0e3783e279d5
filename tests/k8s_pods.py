"""Pods as a Kubernetes node shows them, for the k8s_* decoder tests: cgroup directories in each
kubepods layout (plain directories in unit tests, real cgroups under the cgroup2 mount in kernel
tests) and the kubelet's log directories in a temporary root."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.decoders.cgroup import cgroup2_mount

from .conftest import remove_cgroup

REPO = Path(__file__).resolve().parent.parent

# Container cgroup paths by cgroup driver and runtime, as the kubelet and runtimes make them;
# {uid_} is the UID with systemd's escape ("-" -> "_"), {node} a node container's ID.
LAYOUTS = {
    "systemd-containerd-burstable": "kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope",
    "systemd-crio-besteffort": "kubepods.slice/kubepods-besteffort.slice/"
    "kubepods-besteffort-pod{uid_}.slice/crio-{id}.scope",
    "systemd-docker-guaranteed": "kubepods.slice/kubepods-pod{uid_}.slice/docker-{id}.scope",
    "cgroupfs-containerd-burstable": "kubepods/burstable/pod{uid}/{id}",
    "cgroupfs-docker-guaranteed": "kubepods/pod{uid}/{id}",
    "cgroupfs-crio-besteffort": "kubepods/besteffort/pod{uid}/crio-{id}",
    # A kind node seen from its host: the node container's cgroup, then the kubelet's
    # --cgroup-root=/kubelet prefixing every slice name.
    "kind": "system.slice/docker-{node}.scope/kubelet.slice/kubelet-kubepods.slice/"
    "kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{uid_}.slice/"
    "cri-containerd-{id}.scope",
    # A k3d node (k3s, cgroupfs driver) in a Docker container seen from its host.
    "k3d": "docker/{node}/kubepods/besteffort/pod{uid}/{id}",
}


def container_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex  # 64 hex digits, as runtimes make them


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    container: str  # the container's name
    container_id: str
    sandbox_id: str  # the pod sandbox: a cgroup of its own, no logs

    @classmethod
    def make(cls, namespace: str, name: str, container: str) -> Pod:
        return cls(namespace, name, str(uuid.uuid4()), container, container_id(), container_id())

    def cgroup(self, layout: str, container_id: str | None = None) -> str:
        """The path of a container's cgroup (by default the named container's) below the root."""
        return LAYOUTS[layout].format(
            uid=self.uid,
            uid_=self.uid.replace("-", "_"),
            id=container_id or self.container_id,
            node=64 * "e",
        )

    def log_dir(self, pod_logs: Path) -> Path:
        """The kubelet's log directory of the pod."""
        return pod_logs / f"{self.namespace}_{self.name}_{self.uid}"

    def log_link(self, container_logs: Path) -> Path:
        """The kubelet's symlink to the log of the pod's container."""
        return (
            container_logs
            / f"{self.name}_{self.namespace}_{self.container}-{self.container_id}.log"
        )

    def write_logs(self, pod_logs: Path, container_logs: Path) -> None:
        """The kubelet's log directory of the pod and symlink of its container."""
        logs = self.log_dir(pod_logs) / self.container
        logs.mkdir(parents=True)
        (logs / "0.log").write_text("")
        container_logs.mkdir(parents=True, exist_ok=True)
        self.log_link(container_logs).symlink_to(logs / "0.log")


@contextmanager
def kubelet_logs(pod: Pod, pod_logs: Path, container_logs: Path) -> Iterator[None]:
    """The pod's logs below roots others may use too (a node's /var/log/pods): on the way out,
    only the pod's own entries are removed, and a root only if it was made here."""
    made = [root for root in (pod_logs, container_logs) if not root.exists()]
    try:
        pod.write_logs(pod_logs, container_logs)
        yield
    finally:
        pod.log_link(container_logs).unlink(missing_ok=True)
        shutil.rmtree(pod.log_dir(pod_logs), ignore_errors=True)
        for root in made:
            with suppress(OSError):  # someone else's entries arrived meanwhile: theirs to keep
                root.rmdir()


@contextmanager
def directories(root: Path, *paths: str) -> Iterator[list[Path]]:
    """Make the directories (cgroups, below a cgroup2 mount) of these paths below `root`, and
    remove every one made on the way out, deepest first."""
    made: list[Path] = []
    try:
        for path in paths:
            for directory in reversed([root / path, *(root / path).parents]):
                if directory.is_relative_to(root) and not directory.exists():
                    directory.mkdir()
                    made.append(directory)
        yield [root / path for path in paths]
    finally:
        for directory in sorted(made, key=lambda d: len(d.parts), reverse=True):
            remove_cgroup(directory)


@dataclass(frozen=True)
class Node:
    """Where the kubelet would keep its pods: cgroups below `cgroups`, logs in a temp root."""

    cgroups: Path
    pod_logs: Path
    container_logs: Path

    @property
    def options(self) -> dict[str, str]:
        """The k8s_* decoders' options for this node's logs (the cgroup2 mount is found)."""
        return {"pod_logs": str(self.pod_logs), "container_logs": str(self.container_logs)}

    def add(self, pod: Pod) -> None:
        pod.write_logs(self.pod_logs, self.container_logs)


@contextmanager
def real_node(tmp_path: Path) -> Iterator[Node]:
    """A node whose pods' cgroups are real: below a new cgroup under the cgroup2 mount, so that
    every layout is also seen below a prefix, as in a container's cgroup namespace."""
    mount = cgroup2_mount(Path("/proc/self/mounts"))
    if mount is None:
        pytest.skip("no cgroup2 file system mounted")
    with directories(mount, f"bccx-{uuid.uuid4().hex[:8]}") as [prefix]:
        yield Node(prefix, tmp_path / "pods", tmp_path / "containers")


def builtin_program(name: str, options: dict[str, str]) -> dict[str, Any]:
    """The built-in config/NAME.yaml's program, its k8s_* decoders given `options`."""
    program = dict(yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())["programs"][0])
    program["source"] = str(REPO / "programs" / f"{name}.bpf.c")
    for metric in (m for kind in program["metrics"].values() for m in kind):
        for decoder in (d for label in metric["labels"] for d in label["decoders"]):
            if decoder["name"].startswith("k8s_"):
                decoder.update(options)
    return program
