"""k8s_namespace, k8s_pod, k8s_container on a cgroup tree of plain directories (a cgroup's id is
its directory's inode, as in test_decoder_cgroup) and kubelet log directories in a temp root."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from exporter.decoders import REGISTRY, DecoderError, Unresolved, _refresh, build_chain, k8s
from exporter.decoders._base import TEXT_INPUT

from ..k8s_pods import LAYOUTS, Pod, directories

DECODERS = ("k8s_namespace", "k8s_pod", "k8s_container")
POD = Pod.make("kube-system", "coredns-5d78c9869d-8tqzx", "coredns")


def cgroup_id(path: Path) -> bytes:
    return os.stat(path).st_ino.to_bytes(8, sys.byteorder)


@pytest.fixture
def node(tmp_path: Path) -> dict[str, str]:
    """A node's paths (the decoders' options): an empty cgroup tree and log directories."""
    (tmp_path / "cgroup").mkdir()
    (tmp_path / "pods").mkdir()
    (tmp_path / "containers").mkdir()
    return {
        "cgroupfs": str(tmp_path / "cgroup"),
        "pod_logs": str(tmp_path / "pods"),
        "container_logs": str(tmp_path / "containers"),
    }


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(_refresh, "monotonic", lambda: now[0])
    return now


def identity(node: dict[str, str], cgroup: Path) -> tuple[str, ...]:
    """(namespace, pod, container) of a cgroup, each from its own decoder."""
    key = cgroup_id(cgroup)
    return tuple(build_chain([{"name": name, **node}], 8).decode(key) for name in DECODERS)


def provisional(node: dict[str, str], cgroup: Path) -> tuple[str, ...]:
    """The same, from decoders that all say it is what to show for now, to be asked again."""
    values = []
    for name in DECODERS:
        with pytest.raises(Unresolved) as unresolved:
            build_chain([{"name": name, **node}], 8).decode(cgroup_id(cgroup))
        values.append(unresolved.value.value.decode())
    return tuple(values)


def logs(node: dict[str, str], pod: Pod) -> None:
    pod.write_logs(Path(node["pod_logs"]), Path(node["container_logs"]))


NAMES = ("kube-system", "coredns-5d78c9869d-8tqzx", "coredns")
SANDBOX = ("kube-system", "coredns-5d78c9869d-8tqzx", "unknown")
UNKNOWN = ("unknown", "unknown", "unknown")
SETTLE = k8s.SETTLE_SECONDS


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_containers_in_every_layout(node: dict[str, str], layout: str) -> None:
    logs(node, POD)
    with directories(Path(node["cgroupfs"]), POD.cgroup(layout)) as [cgroup]:
        assert identity(node, cgroup) == NAMES


def test_cgroups_of_no_pod_are_unknown_at_once(node: dict[str, str]) -> None:
    logs(node, POD)
    root = Path(node["cgroupfs"])
    with directories(root, "system.slice/ssh.service", "kubepods/burstable") as cgroups:
        for cgroup in (root, *cgroups):
            assert identity(node, cgroup) == UNKNOWN


def test_the_sandbox_has_the_pods_names_and_no_container(
    node: dict[str, str], clock: list[float]
) -> None:
    logs(node, POD)
    sandbox = POD.cgroup("systemd-containerd-burstable", POD.sandbox_id)
    with directories(Path(node["cgroupfs"]), sandbox) as [cgroup]:
        # Like a container whose log link the kubelet has not made yet: asked again later.
        assert provisional(node, cgroup) == SANDBOX
        clock[0] += SETTLE
        assert identity(node, cgroup) == SANDBOX
        assert identity(node, cgroup.parent) == SANDBOX  # the pod's own cgroup


def test_a_pod_without_logs_is_unknown(node: dict[str, str], clock: list[float]) -> None:
    with directories(Path(node["cgroupfs"]), POD.cgroup("cgroupfs-docker-guaranteed")) as [cg]:
        assert provisional(node, cg) == UNKNOWN
        clock[0] += SETTLE - 0.1
        assert provisional(node, cg) == UNKNOWN  # no read since the miss settled
        clock[0] += 0.1
        assert identity(node, cg) == UNKNOWN


def test_ids_of_no_cgroup_are_unknown(node: dict[str, str], clock: list[float]) -> None:
    not_a_cgroup = Path(node["pod_logs"])
    assert provisional(node, not_a_cgroup) == UNKNOWN
    clock[0] += SETTLE
    assert identity(node, not_a_cgroup) == UNKNOWN


def test_a_pod_started_since_is_found(node: dict[str, str], clock: list[float]) -> None:
    root = Path(node["cgroupfs"])
    decoder = build_chain([{"name": "k8s_pod", **node}], 8)
    with directories(root, "system.slice") as [service]:
        assert decoder.decode(cgroup_id(service)) == "unknown"  # reads the tree
        with directories(root, POD.cgroup("systemd-crio-besteffort")) as [cgroup]:
            logs(node, POD)
            # The tree read is too recent to read again: "unknown" for now, asked again later.
            with pytest.raises(Unresolved) as unresolved:
                decoder.decode(cgroup_id(cgroup))
            assert unresolved.value.value == b"unknown"
            clock[0] += _refresh.MIN_REFRESH_SECONDS
            assert decoder.decode(cgroup_id(cgroup)) == "coredns-5d78c9869d-8tqzx"


def test_a_container_linked_after_it_started_is_found(
    node: dict[str, str], clock: list[float]
) -> None:
    other = Pod.make("default", "web", "nginx")
    logs(node, other)
    with directories(Path(node["cgroupfs"]), POD.cgroup("cgroupfs-crio-besteffort")) as [cgroup]:
        assert provisional(node, cgroup) == UNKNOWN
        logs(node, POD)  # the kubelet links the log just after starting the container
        clock[0] += SETTLE
        assert identity(node, cgroup) == NAMES


def test_decoders_of_the_same_paths_share_one_read(node: dict[str, str]) -> None:
    logs(node, POD)
    with directories(Path(node["cgroupfs"]), POD.cgroup("kind")) as [cgroup]:
        key = cgroup_id(cgroup)
        pod = build_chain([{"name": "k8s_pod", **node}], 8)
        assert pod.decode(key) == "coredns-5d78c9869d-8tqzx"
    # The tree read for the first decoder still holds the cgroup removed since.
    container = build_chain([{"name": "k8s_container", **node}], 8)
    assert container.decode(key) == "coredns"


def test_missing_log_directories_warn_once_each(
    tmp_path: Path, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    node = {
        "cgroupfs": str(tmp_path),
        "pod_logs": str(tmp_path / "no-pods"),
        "container_logs": str(tmp_path / "no-containers"),
    }
    with directories(tmp_path, POD.cgroup("k3d")) as [cgroup], caplog.at_level(logging.WARNING):
        assert provisional(node, cgroup) == UNKNOWN
        clock[0] += SETTLE
        assert identity(node, cgroup) == UNKNOWN
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"k8s: cannot read {tmp_path / 'no-pods'}",
        f"k8s: cannot read {tmp_path / 'no-containers'}",
    ]


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("size", [4, 16])
def test_other_widths_are_rejected(name: str, size: int) -> None:
    with pytest.raises(DecoderError) as e:
        REGISTRY[name]({}, size)
    assert str(e.value) == f"{name} decodes 8-byte cgroup ids, not {size}"


@pytest.mark.parametrize("name", DECODERS)
def test_text_input_is_rejected(name: str) -> None:
    with pytest.raises(DecoderError, match=f"{name} decodes a raw field"):
        REGISTRY[name]({}, TEXT_INPUT)


@pytest.mark.parametrize("option", ["cgroupfs", "mounts", "pod_logs", "container_logs"])
def test_a_path_option_of_another_type_is_a_decoder_error(option: str) -> None:
    with pytest.raises(DecoderError, match="k8s_pod: bad options"):
        build_chain([{"name": "k8s_pod", option: 5}], 8)
