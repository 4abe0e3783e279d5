// Syscalls by pod, container and syscall number: the `syscalls` counter keyed also by the cgroup
// of the calling task (bpf_get_current_cgroup_id(): its cgroup v2 id), which the k8s_namespace,
// k8s_pod and k8s_container decoders turn into names. Processes outside pods share one series
// per syscall, labelled "unknown".
//
// The namespace, pod and container labels all decode the one cgroup id (labels' `offset: 0`).
// A hash keyed by cgroup, where `syscalls` pays one array slot: see config/syscalls_by_pod.yaml.
#define MAX_SYSCALLS 1024
// (cgroups that make syscalls) x (syscalls each makes): ~110 pods of a few containers, plus
// the node's own services, each with a few dozen syscalls.
#define MAX_KEYS 16384

struct pod_syscall_key {
    u64 cgroup;
    u32 nr;
    u32 pad;
};

// Per-CPU: a pod making the same syscall on every CPU costs no atomics. Pods come and go: a
// removed cgroup's keys are deleted with it, and LRU for those whose removal was missed
// (classic tracepoint events can be dropped; docs/operations.md, Keys that come and go).
BPF_TABLE("lru_percpu_hash", struct pod_syscall_key, u64, pod_syscalls_total, MAX_KEYS);

RAW_TRACEPOINT_PROBE(sys_enter)
{
    // raw_syscalls:sys_enter(struct pt_regs *regs, long id)
    long id = ctx->args[1];
    if (id < 0 || id >= MAX_SYSCALLS)
        return 0;
    u64 cgroup = bpf_get_current_cgroup_id();
    struct pod_syscall_key key = {cgroup, id};
    u64 zero = 0, *count = pod_syscalls_total.lookup(&key);
    if (!count && exporter_key_added(pod_syscalls_total.insert(&key, &zero),
                                     EXPORTER_MAP(pod_syscalls_total)))
        count = pod_syscalls_total.lookup(&key);
    exporter_add_percpu(count, 1, EXPORTER_MAP(pod_syscalls_total));
    return 0;
}

// A cgroup removed: its keys go with it, one delete per syscall number (52 us a removal here;
// EXPORTER_CGROUP2_HIERARCHY in the prelude says why only v2's). No task makes syscalls in a
// removed cgroup: no key of it comes back.
TRACEPOINT_PROBE(cgroup, cgroup_rmdir)
{
    if (args->root != EXPORTER_CGROUP2_HIERARCHY)
        return 0;
    struct pod_syscall_key key = {.cgroup = args->id};
#pragma clang loop unroll(disable)
    for (u32 nr = 0; nr < MAX_SYSCALLS; nr++) {
        key.nr = nr;
        pod_syscalls_total.delete(&key);
    }
    return 0;
}
