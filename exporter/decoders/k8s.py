"""k8s_namespace, k8s_pod, k8s_container: an 8-byte cgroup id -> the Kubernetes namespace, pod
or container name of the pod whose cgroup it is ("kube-system", "coredns-5d78c9869d-8tqzx",
"coredns"), without the API server (see exporter/k8s.py for the layouts and the files read).

cgroup id -> cgroup v2 path (as the cgroup decoder, options `cgroupfs` and `mounts`) -> pod UID
and container ID -> names from the kubelet's log directories (options `pod_logs`, default
/var/log/pods, and `container_logs`, default /var/log/containers).

Ids of cgroups that are no pod's (system services, the host's own processes) and pods the
kubelet has no log directory for decode to "unknown": one series for all of them. A pod cgroup
that is no container's (the pod sandbox, the pause process) has its namespace and pod and the
container "unknown". Both the tree and the log directories are read at the first decode and
again on a miss, at most once per MIN_REFRESH_SECONDS (see _refresh.py). A miss is final only
once a read made SETTLE_SECONDS after the id's first miss has it missing too: the kubelet links
a container's log just after starting the container, so a first look may come too early. Until
then it is Unresolved: shown as "unknown" for now and asked again later.

The three decoders of one node's paths share one reader, so that the labels of a series come
from the same read and the tree is walked once for all of them.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .. import k8s
from . import _refresh
from ._base import TEXT_INPUT, DecoderError, Unresolved
from ._refresh import Snapshot
from .cgroup import CgroupPaths, tree_options

log = logging.getLogger(__name__)
T = TypeVar("T")

UNKNOWN = b"unknown"
POD_LOGS = "/var/log/pods"
CONTAINER_LOGS = "/var/log/containers"
# How long after an id's first miss a read must be made for the miss to be final.
SETTLE_SECONDS = _refresh.MIN_REFRESH_SECONDS
# Ids remembered as missed (removed cgroups and pod sandboxes stay misses for good); the
# collector caches final answers, so only the ids of the last few seconds matter.
MAX_MISSES = 10_000


@dataclass(frozen=True)
class Identity:
    namespace: bytes = UNKNOWN
    pod: bytes = UNKNOWN
    container: bytes = UNKNOWN


@dataclass
class Logs:
    """What the kubelet's log directories say."""

    pods: dict[bytes, tuple[bytes, bytes]]
    containers: dict[bytes, bytes]

    def knows(self, where: k8s.PodCgroup) -> bool:
        return where.pod_uid in self.pods and (
            where.container_id is None or where.container_id in self.containers
        )

    def identity(self, where: k8s.PodCgroup) -> Identity:
        pod = self.pods.get(where.pod_uid)
        if pod is None:
            return Identity()
        container = self.containers.get(where.container_id or b"", UNKNOWN)
        return Identity(pod[0], pod[1], container)


class PodIdentities:
    """cgroup id -> Identity, from the cgroup tree and the kubelet's log directories."""

    def __init__(self, cgroups: CgroupPaths, pod_logs: Path, container_logs: Path) -> None:
        self._cgroups = cgroups
        self._pod_logs = pod_logs
        self._container_logs = container_logs
        self._logs = Snapshot(self._read_logs)
        self._warned: set[Path] = set()  # only _read_logs() touches it, under the lock
        # cgroup id -> monotonic time of its first miss, while it is one.
        self._misses: dict[int, float] = {}

    def find(self, cgroup_id: int) -> tuple[Identity, bool]:
        """(the identity, whether it is final). A miss (a cgroup, pod or container not found) is
        final only when answered by a read made SETTLE_SECONDS after the id's first miss: the
        kubelet links a container's log just after starting it, the tree may be older than a
        new cgroup. Until then "unknown" is shown, to be asked again later. Counted from the
        id's first miss, not from this call: the three decoders of a key ask in turn."""
        if len(self._misses) >= MAX_MISSES:
            self._misses.clear()  # at worst, ids missed before are provisional once more
        first_miss = self._misses.setdefault(cgroup_id, _refresh.monotonic())
        identity, known, read_at = self._lookup(cgroup_id)
        if known:
            self._misses.pop(cgroup_id, None)
        return identity, known or read_at >= first_miss + SETTLE_SECONDS

    def _lookup(self, cgroup_id: int) -> tuple[Identity, bool, float]:
        """(the identity, whether the tree and the logs know it, when the read that answered was
        made); a miss reads again (rate-limited)."""
        path, known = self._cgroups.find(cgroup_id)
        where = k8s.parse_cgroup_path(path) if path is not None else None
        if where is None:
            return Identity(), known, self._cgroups.read_at  # not found, or not a pod's
        logs = self._logs.current()
        if not logs.knows(where):  # a pod or container started since
            logs = self._logs.refresh()
        return logs.identity(where), logs.knows(where), self._logs.loaded_at

    def _read_logs(self) -> Logs:
        return Logs(
            self._read(k8s.read_pod_logs, self._pod_logs),
            self._read(k8s.read_container_logs, self._container_logs),
        )

    def _read(self, read: Callable[[Path], dict[bytes, T]], root: Path) -> dict[bytes, T]:
        try:
            return read(root)
        except OSError as err:
            if root not in self._warned:  # once per directory: it stays missing off Kubernetes
                self._warned.add(root)
                log.warning("k8s: cannot read %s (%s): its names decode to unknown", root, err)
            return {}


_shared: dict[tuple[Path | None, Path, Path, Path], PodIdentities] = {}
_shared_lock = threading.Lock()


def pod_identities(options: Mapping[str, Any]) -> PodIdentities:
    """The reader of the paths in a decoder's options, one per distinct set of paths."""
    key = (
        *tree_options(options),
        Path(options.get("pod_logs") or POD_LOGS),
        Path(options.get("container_logs") or CONTAINER_LOGS),
    )
    with _shared_lock:
        if key not in _shared:
            _shared[key] = PodIdentities(CgroupPaths(key[0], key[1], "k8s"), key[2], key[3])
        return _shared[key]


class _PodLabel:
    name: str  # the decoder's name, and the Identity field it gives

    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size == TEXT_INPUT:
            raise DecoderError(f"{self.name} decodes a raw field, so it must be the first decoder")
        if size != 8:
            raise DecoderError(f"{self.name} decodes 8-byte cgroup ids, not {size}")
        self._identities = pod_identities(options)
        self._field = self.name.removeprefix("k8s_")

    def decode(self, data: bytes) -> bytes:
        identity, final = self._identities.find(int.from_bytes(data, sys.byteorder))
        value: bytes = getattr(identity, self._field)
        if not final:
            raise Unresolved(value)
        return value


class K8sNamespace(_PodLabel):
    name = "k8s_namespace"


class K8sPod(_PodLabel):
    name = "k8s_pod"


class K8sContainer(_PodLabel):
    name = "k8s_container"
