// Run-queue latency by pod and container (runqlat per pod): how long the runnable tasks of each
// cgroup wait for a CPU; the k8s_namespace, k8s_pod and k8s_container decoders name the cgroup.
// The waits are those of runqlat.bpf.c: from a wakeup (sched_wakeup, sched_wakeup_new) or a
// preemption (sched_switch with prev_state "R"/"R+") to sched_switch putting the task on a CPU;
// idle tasks (pid 0) are left out.
//
// Whose cgroup: bpf_get_current_cgroup_id() is the only struct-free way to a task's cgroup, and
// it gives the current task's. At the sched_switch that ends a wait, current is the task leaving
// the CPU (prev), not the one that waited (next); sched_switch gives next's pid only. So the
// wait is kept per CPU (pending_latency: the pid of the task put on this CPU, how long it
// waited) until the task leaves that CPU again: the next sched_switch on this CPU has it as
// prev (a running task does not change CPU) and runs in its context, so current's cgroup is
// the task's.
// A latency is thus counted when the task that waited stops running, not when it starts. When
// the kernel drops a sched_switch event (see runqlat.bpf.c), prev does not match the pending
// pid: that latency is lost, never given to another task.
//
// The namespace, pod and container labels all decode the one cgroup id (labels' `offset: 0`).
// Latency in microseconds as bpf_log2l slots, plus the sum under SUM_SLOT, per cgroup.
#define SUM_SLOT 63
#define MAX_QUEUED 10240  // tasks runnable at once, not yet on a CPU
// (cgroups whose tasks wait) x (slots each fills, ~15): ~110 pods, node services.
#define MAX_KEYS 16384
#define TASK_REPORT_MAX 0x100  // prev_state: see runqlat.bpf.c

struct pending_t {
    u32 pid;  // the task on this CPU whose wait is not counted yet; 0: none
    u32 pad;
    u64 usecs;
};

struct pod_latency_key {
    u64 cgroup;
    u32 slot;
    u32 pad;
};

BPF_TABLE("lru_hash", u32, u64, queued_at, MAX_QUEUED);  // LRU: see runqlat.bpf.c
BPF_PERCPU_ARRAY(pending_latency, struct pending_t, 1);
// Per-CPU: a pod's tasks waking on every CPU cost no atomics.
BPF_PERCPU_HASH(pod_runq_latency, struct pod_latency_key, u64, MAX_KEYS);

static __always_inline void enqueue(u32 pid)
{
    if (pid == 0)
        return;
    u64 ts = bpf_ktime_get_ns();
    if (queued_at.update(&pid, &ts))
        EXPORTER_UPDATE_FAILED(queued_at);
}

static __always_inline void add(struct pod_latency_key *key, u64 value)
{
    // Not .increment(): in bcc 0.26 it silently does nothing on a BPF_PERCPU_HASH.
    u64 zero = 0;
    u64 *slot = pod_runq_latency.lookup_or_try_init(key, &zero);
    if (slot)
        *slot += value;
    else
        EXPORTER_UPDATE_FAILED(pod_runq_latency);
}

// Count the wait of the task leaving this CPU, in its own context (current == prev).
static __always_inline void count_pending(struct pending_t *pending, u32 prev)
{
    if (pending->pid == 0 || pending->pid != prev)
        return;
    u64 cgroup = bpf_get_current_cgroup_id();
    struct pod_latency_key key = {cgroup, bpf_log2l(pending->usecs)};
    add(&key, 1);
    key.slot = SUM_SLOT;
    add(&key, pending->usecs);
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
    enqueue(args->pid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
    enqueue(args->pid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    u32 zero = 0;
    struct pending_t *pending = pending_latency.lookup(&zero);
    if (!pending)
        return 0;
    u32 prev = args->prev_pid;
    count_pending(pending, prev);
    pending->pid = 0;

    if ((args->prev_state & (TASK_REPORT_MAX - 1)) == 0)
        enqueue(prev);  // still runnable: back in the queue
    else if (prev != 0)
        queued_at.delete(&prev);  // it blocks: forget a wakeup that came while it ran

    u32 pid = args->next_pid;
    if (pid == 0)
        return 0;
    u64 *queued = queued_at.lookup(&pid);
    if (!queued)
        return 0;  // queued before we attached, or its wakeup was missed
    pending->usecs = (bpf_ktime_get_ns() - *queued) / 1000;
    pending->pid = pid;
    queued_at.delete(&pid);
    return 0;
}
