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

// Per-CPU: a pod making the same syscall on every CPU costs no atomics.
BPF_PERCPU_HASH(pod_syscalls_total, struct pod_syscall_key, u64, MAX_KEYS);

RAW_TRACEPOINT_PROBE(sys_enter)
{
    // raw_syscalls:sys_enter(struct pt_regs *regs, long id)
    long id = ctx->args[1];
    if (id < 0 || id >= MAX_SYSCALLS)
        return 0;
    u64 cgroup = bpf_get_current_cgroup_id();
    struct pod_syscall_key key = {cgroup, id};
    // Not .increment(): in bcc 0.26 it silently does nothing on a BPF_PERCPU_HASH.
    u64 zero = 0;
    u64 *count = pod_syscalls_total.lookup_or_try_init(&key, &zero);
    if (count)
        (*count)++;
    else
        EXPORTER_UPDATE_FAILED(pod_syscalls_total);
    return 0;
}
