"""Kubernetes pod identity from what a node shows, without the API server.

A container's processes live in a cgroup whose path the kubelet and the container runtime
build from the pod UID and the container ID:

    systemd driver  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID>.slice/<C>
                    (guaranteed pods: /kubepods.slice/kubepods-pod<UID>.slice/<C>; the UID's
                    dashes are written as underscores, systemd's escape); <C> is
                    cri-containerd-<ID>.scope, crio-<ID>.scope or docker-<ID>.scope
    cgroupfs driver /kubepods/burstable/pod<UID>/<C>, /kubepods/pod<UID>/<C> (guaranteed),
                    /kubepods/besteffort/pod<UID>/<C>; <C> is <ID> (containerd, Docker) or
                    crio-<ID> (CRI-O)

Either may sit below a prefix: a kubelet with --cgroup-root=/kubelet (kind) names the slices
kubelet-kubepods-...; a node in a container (kind, k3d) seen from its host adds the container's
own cgroup in front. The outermost pod in a path is taken: the one the node's kubelet runs.

The names come from the kubelet's log directories: /var/log/pods/<namespace>_<pod>_<UID>/
(namespace and pod names are DNS names, so the underscores are unambiguous) names the pod of
a UID. Its <container>/<restart>.log files do not say which container ID they belong to, but the
/var/log/containers/<pod>_<namespace>_<container>-<ID>.log symlinks the kubelet keeps beside
them do: that is the container of an ID. No guess from a pod's only container directory: the
pod sandbox (the pause process) has a cgroup of its own and no logs, and would take the name
of the pod's container.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# Systemd escapes "-" in unit names as "_", so the UID in a slice name has underscores.
_SYSTEMD_POD = (
    rb"/(?:[^/]*-)?kubepods\.slice(?:/(?:[^/]*-)?kubepods-(?:burstable|besteffort)\.slice)?"
    rb"/(?:[^/]*-)?kubepods(?:-burstable|-besteffort)?-pod(?P<systemd>[0-9a-f_]+)\.slice"
)
_CGROUPFS_POD = rb"/kubepods(?:/burstable|/besteffort)?/pod(?P<cgroupfs>[0-9a-f-]+)"
# crio-conmon-<ID>.scope (CRI-O's monitor, beside the container) is no container.
_CONTAINER = rb"(?:/(?:(?:cri-containerd|crio|docker)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?)?"
_POD_CGROUP = re.compile(
    b"(?:" + _SYSTEMD_POD + b"|" + _CGROUPFS_POD + b")" + _CONTAINER + rb"(?=/|$)"
)

_POD_LOGS = re.compile(rb"(?P<namespace>[^_]+)_(?P<pod>[^_]+)_(?P<uid>[^_]+)")
_CONTAINER_LOG = re.compile(rb"[^_]+_[^_]+_(?P<container>[^_]+)-(?P<id>[0-9a-f]{64})\.log")


@dataclass(frozen=True)
class PodCgroup:
    """Where a cgroup is in a pod."""

    pod_uid: bytes
    container_id: bytes | None  # None: the pod's own cgroup, or one not of a container


def parse_cgroup_path(path: bytes) -> PodCgroup | None:
    """The pod (and container) of a cgroup v2 path ("/kubepods/pod<UID>/<ID>"); None when the
    cgroup is not a pod's."""
    match = _POD_CGROUP.search(path)
    if match is None:
        return None
    systemd = match["systemd"]
    uid = systemd.replace(b"_", b"-") if systemd is not None else match["cgroupfs"]
    return PodCgroup(uid, match["id"])


def read_pod_logs(root: Path) -> dict[bytes, tuple[bytes, bytes]]:
    """Pod UID -> (namespace, pod name), from the kubelet's <root>/<namespace>_<pod>_<UID>."""
    pods = {}
    for name in os.listdir(os.fsencode(root)):
        match = _POD_LOGS.fullmatch(name)
        if match is not None:
            pods[match["uid"]] = (match["namespace"], match["pod"])
    return pods


def read_container_logs(root: Path) -> dict[bytes, bytes]:
    """Container ID -> container name, from the kubelet's
    <root>/<pod>_<namespace>_<container>-<ID>.log symlinks."""
    containers = {}
    for name in os.listdir(os.fsencode(root)):
        match = _CONTAINER_LOG.fullmatch(name)
        if match is not None:
            containers[match["id"]] = match["container"]
    return containers
