"""exporter.k8s: pod UID and container ID out of cgroup paths of every kubepods layout, and names
out of the kubelet's log directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.k8s import PodCgroup, parse_cgroup_path, read_container_logs, read_pod_logs

from ..k8s_pods import LAYOUTS, Pod

POD = Pod.make("kube-system", "coredns-5d78c9869d-8tqzx", "coredns")
UID = POD.uid.encode()
ID = POD.container_id.encode()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout(layout: str) -> None:
    assert parse_cgroup_path(f"/{POD.cgroup(layout)}".encode()) == PodCgroup(UID, ID)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_below_a_prefix(layout: str) -> None:
    # A container's cgroup namespace, a k3s or kind node seen from further out.
    path = f"/system.slice/containerd.service/k3s/{POD.cgroup(layout)}"
    assert parse_cgroup_path(path.encode()) == PodCgroup(UID, ID)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_cgroups_below_a_container_are_its(layout: str) -> None:
    # systemd in a container, or a runtime's own sub-cgroups.
    path = f"/{POD.cgroup(layout)}/init.scope/x"
    assert parse_cgroup_path(path.encode()) == PodCgroup(UID, ID)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_pods_own_cgroup_has_no_container(layout: str) -> None:
    pod_cgroup = POD.cgroup(layout).rsplit("/", 1)[0]
    assert parse_cgroup_path(f"/{pod_cgroup}".encode()) == PodCgroup(UID, None)


@pytest.mark.parametrize(
    "path",
    [
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/"
        "crio-conmon-{id}.scope",  # CRI-O's monitor, beside the container
        "/kubepods/burstable/pod{uid}/not-a-container",
        "/kubepods/burstable/pod{uid}/{short}",  # a container ID is 64 hex digits
    ],
)
def test_other_cgroups_in_a_pod_have_no_container(path: str) -> None:
    text = path.format(uid=POD.uid, uid_=POD.uid.replace("-", "_"), id=ID.decode(), short="ab12")
    assert parse_cgroup_path(text.encode()) == PodCgroup(UID, None)


def test_static_pod_uids_are_hashes() -> None:
    # Static (mirror) pods: the UID is a hash of the manifest, without dashes.
    uid = "5fd3bc5bb7a3b1c0d1e2f3a4b5c6d7e8"
    path = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice"
    assert parse_cgroup_path(path.encode()) == PodCgroup(uid.encode(), None)


def test_the_outermost_pod_wins() -> None:
    # A pod running a kind cluster: the node's kubelet knows the outer pod.
    inner = Pod.make("default", "inner", "app")
    path = f"/{POD.cgroup('cgroupfs-containerd-burstable')}/{inner.cgroup('kind')}"
    assert parse_cgroup_path(path.encode()) == PodCgroup(UID, ID)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/system.slice/ssh.service",
        "/system.slice/containerd.service",
        "/user.slice/user-0.slice/session-1.scope",
        "/kubepods.slice",
        "/kubepods.slice/kubepods-burstable.slice",
        "/kubepods",
        "/kubepods/burstable",
        "/kubepodsx/pod{uid}/{id}",
        "/docker/{id}",
        "/system.slice/docker-{id}.scope",
        "/machine.slice/pod{uid}.slice/{id}",  # a pod-like name outside kubepods
        "/kubepods/burstable/pod{uid}x",
    ],
)
def test_cgroups_of_no_pod(path: str) -> None:
    assert parse_cgroup_path(path.format(uid=POD.uid, id=ID.decode()).encode()) is None


def test_pod_logs_name_pods_by_uid(tmp_path: Path) -> None:
    POD.write_logs(tmp_path / "pods", tmp_path / "containers")
    (tmp_path / "pods" / "not_a-pod").mkdir()  # two parts: skipped
    assert read_pod_logs(tmp_path / "pods") == {UID: (b"kube-system", b"coredns-5d78c9869d-8tqzx")}


def test_container_logs_name_containers_by_id(tmp_path: Path) -> None:
    POD.write_logs(tmp_path / "pods", tmp_path / "containers")
    other = Pod.make("default", "web", "nginx-sidecar")
    other.write_logs(tmp_path / "pods", tmp_path / "containers")
    (tmp_path / "containers" / "web_default_nginx-abc.log").touch()  # no 64-digit ID
    assert read_container_logs(tmp_path / "containers") == {
        ID: b"coredns",
        other.container_id.encode(): b"nginx-sidecar",
    }


def test_missing_log_directories_raise(tmp_path: Path) -> None:
    # The decoder turns it into one warning and "unknown" names.
    with pytest.raises(FileNotFoundError):
        read_pod_logs(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        read_container_logs(tmp_path / "missing")
