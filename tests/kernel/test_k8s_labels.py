"""k8s_namespace, k8s_pod, k8s_container on real cgroups: one pod per kubepods layout, each a
real cgroup v2 directory (below a test cgroup: every layout is also seen below a prefix) with the
kubelet's log directories in a temp root; a process moves itself into its container's cgroup
and calls getppid a known number of times; the series carry exactly that pod's names.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..k8s_pods import LAYOUTS, Pod, directories
from . import workload

# Moves itself into the cgroup whose cgroup.procs is argv[2], then calls getppid argv[3] times.
IN_CGROUP = """
with open(sys.argv[2], "w") as procs:
    procs.write(str(os.getpid()))
for _ in range(int(sys.argv[3])):
    os.getppid()
"""

GETPPID_BY_POD = """
name: getppid_by_pod
code: |
  struct key { u64 namespace_cgroup, pod_cgroup, container_cgroup; };
  BPF_HASH(calls, struct key, u64, 1024);
  TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
      u64 cgroup = bpf_get_current_cgroup_id();
      struct key key = {cgroup, cgroup, cgroup};
      calls.atomic_increment(key);
      return 0;
  }
metrics:
  counters:
    - name: test_getppid_by_pod_total
      help: getppid calls by pod.
      map: calls
      labels:
        - {name: namespace, size: 8, decoders: [{name: k8s_namespace}]}
        - {name: pod, size: 8, decoders: [{name: k8s_pod}]}
        - {name: container, size: 8, decoders: [{name: k8s_container}]}
"""

PRIMES = [23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67]


def run_in(cgroup: Path, calls: int) -> None:
    workload.run(workload.unique_comm(), IN_CGROUP, str(cgroup / "cgroup.procs"), str(calls))


def by_pod(samples: dict) -> dict[tuple[str, str, str], float]:
    out = {}
    for (name, labels), value in samples.items():
        if name == "bcc_test_getppid_by_pod_total":
            found = dict(labels)
            out[(found["namespace"], found["pod"], found["container"])] = value
    return out


def test_every_layout_on_real_cgroups(daemon, write_config, node):
    pods = {
        layout: Pod.make(f"ns-{i}", f"web-{i}-5d78c9869d-8tqzx", f"app-{layout}")
        for i, layout in enumerate(sorted(LAYOUTS))
    }
    for pod in pods.values():
        node.add(pod)
    sandbox = pods["systemd-containerd-burstable"]
    paths = [pod.cgroup(layout) for layout, pod in pods.items()]
    paths += [sandbox.cgroup("systemd-containerd-burstable", sandbox.sandbox_id)]
    paths += ["system.slice/bccx.service"]  # no pod's
    program = yaml.safe_load(GETPPID_BY_POD)
    for label in program["metrics"]["counters"][0]["labels"]:
        label["decoders"][0].update(node.options)
    config = write_config("getppid_by_pod", yaml.safe_dump({"programs": [program]}))
    with directories(node.cgroups, *paths) as cgroups:
        # Started after the cgroups and logs are made: its first read finds them all.
        exporter = daemon(f"--config.file={config}")
        for cgroup, calls in zip(cgroups, PRIMES, strict=False):
            run_in(cgroup, calls)
        counts = by_pod(exporter.scrape())

    for (layout, pod), calls in zip(pods.items(), PRIMES, strict=False):
        assert counts.get((pod.namespace, pod.name, pod.container)) == calls, (layout, counts)
    # The sandbox: the pod's names, no container's.
    assert counts.get((sandbox.namespace, sandbox.name, "unknown")) == PRIMES[len(pods)], counts
    # Outside pods: one series with everything else on the machine that calls getppid.
    assert counts.get(("unknown", "unknown", "unknown"), 0) >= PRIMES[len(pods) + 1], counts
    assert len(counts) == len(pods) + 2, counts
