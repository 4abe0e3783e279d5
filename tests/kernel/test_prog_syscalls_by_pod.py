"""The built-in `syscalls_by_pod` program: a process in a pod's container cgroup (a real cgroup
v2 directory in the systemd driver's layout, the kubelet's log directories in a temp root)
makes known syscalls; its pod's series count exactly those, by syscall name."""

from __future__ import annotations

import yaml

from ..k8s_pods import Pod, builtin_program, directories
from . import workload

N = 23  # bcc's rule for tools: a prime number of events, matched exactly
FAILED = 19
CALLS = "bcc_pod_syscalls_total"

# Moves itself into the cgroup whose cgroup.procs is argv[2], then makes the known syscalls.
IN_POD = f"""
with open(sys.argv[2], "w") as procs:
    procs.write(str(os.getpid()))
for _ in range({N}):
    os.getppid()
for _ in range({FAILED}):
    try:
        os.sched_get_priority_max(-1)  # fails (EINVAL); entered all the same
    except OSError:
        pass
"""


def test_a_pods_syscalls_count_exactly(daemon, write_config, node):
    pod = Pod.make("shop", "checkout-7f9c6b5d4-x2x9z", "server")
    node.add(pod)
    program = builtin_program("syscalls_by_pod", node.options)
    config = write_config("syscalls_by_pod", yaml.safe_dump({"programs": [program]}))
    with directories(node.cgroups, pod.cgroup("systemd-containerd-burstable")) as [cgroup]:
        exporter = daemon(f"--config.file={config}")
        workload.run(workload.unique_comm(), IN_POD, str(cgroup / "cgroup.procs"))
        samples = exporter.scrape()

    ours = {}
    for (name, labels), value in samples.items():
        found = dict(labels)
        if name == CALLS and found["pod"] == pod.name:
            assert (found["namespace"], found["container"]) == (pod.namespace, pod.container)
            ours[found["syscall"]] = value
    assert ours["getppid"] == N
    assert ours["sched_get_priority_max"] == FAILED
    # Everything else on the machine is outside pods: one series per syscall.
    others = {dict(labels)["pod"] for name, labels in samples if name == CALLS}
    assert others == {pod.name, "unknown"}
