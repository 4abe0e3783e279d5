// Run-queue latency by pod and container (runqlat per pod): how long the runnable tasks of each
// cgroup wait for a CPU; the k8s_namespace, k8s_pod and k8s_container decoders name the cgroup.
// The waits are those of runqlat.bpf.c: from a wakeup (sched_wakeup, sched_wakeup_new) or a
// preemption (sched_switch with the task still runnable) to sched_switch putting the task on a
// CPU; idle tasks (pid 0) are left out.
//
// Whose cgroup: bpf_get_current_cgroup_id() is the only struct-free way to a task's cgroup, and
// it gives the current task's. At the sched_switch that ends a wait, current is the task leaving
// the CPU (prev), not the one that waited (next). So the wait is kept per CPU (pending_latency:
// the task put on this CPU, how long it waited) until the task leaves that CPU again: the next
// sched_switch on this CPU has it as prev (a running task does not change CPU) and runs in its
// context, so current's cgroup is the task's.
// A latency is thus counted when the task that waited stops running, not when it starts (and
// not at all when that is the task's death: see sched_switch). When
// the kernel drops a sched_switch event, prev does not match the pending task: that latency is
// lost, never given to another task.
//
// Raw tracepoints: no record is copied before the program runs. They need Linux >= 5.18,
// whose raw sched_switch hands over prev_state. The task pointers they hand over are map keys,
// never dereferenced. Each task keeps one queued_at entry (its wait's start, or 0) for its
// life, written in place: no insert or delete, with their bucket locks, on every event; it is
// deleted at the task's last switch (TASK_DEAD). The LRU evicts the entries of tasks whose
// last switch was missed.
//
// The namespace, pod and container labels all decode the one cgroup id (labels' `offset: 0`).
// Latency in microseconds as bpf_log2l slots, plus the sum under EXPORTER_SLOTS_SUM, per
// cgroup: 64 slots, so that a removed cgroup's keys are deleted in 64 deletes
// (cgroup:cgroup_rmdir below).
#define MAX_TASKS 10240  // tasks alive at once that were ever queued
// (cgroups whose tasks wait) x (slots each fills, ~15): ~110 pods, node services.
#define MAX_KEYS 16384
#define TASK_RUNNING 0x0  // sched_switch's raw prev_state (the task's __state)
#define TASK_DEAD 0x80    // include/linux/sched.h: prev_state of a task's last switch

struct pending_t {
    u64 task;  // the task on this CPU whose wait is not counted yet; 0: none
    u64 usecs;
};

struct pod_latency_key {
    u64 cgroup;
    u32 slot;
    u32 pad;
};

BPF_TABLE("lru_hash", u64, u64, queued_at, MAX_TASKS);
BPF_PERCPU_ARRAY(pending_latency, struct pending_t, 1);
// Per-CPU: a pod's tasks waking on every CPU cost no atomics. Pods come and go: a removed
// cgroup's keys are deleted with it, and LRU for those whose removal was missed (classic
// tracepoint events can be dropped) or that are not deleted (the node's own services
// restarting under new cgroups are removed too; docs/operations.md, Keys that come and go).
BPF_TABLE("lru_percpu_hash", struct pod_latency_key, u64, pod_runq_latency, MAX_KEYS);

static __always_inline void enqueue(u64 task, u64 now)
{
    u64 *queued = queued_at.lookup(&task);
    if (queued)
        *queued = now;
    else if (queued_at.update(&task, &now))
        EXPORTER_UPDATE_FAILED(queued_at);
}

static __always_inline void add(struct pod_latency_key *key, u64 value)
{
    u64 zero = 0, *slot = pod_runq_latency.lookup(key);
    if (!slot &&
        exporter_key_added(pod_runq_latency.insert(key, &zero), EXPORTER_MAP(pod_runq_latency)))
        slot = pod_runq_latency.lookup(key);
    exporter_add_percpu(slot, value, EXPORTER_MAP(pod_runq_latency));
}

// Count the wait of the task leaving this CPU, in its own context (current == prev).
static __always_inline void count_pending(struct pending_t *pending, u64 prev)
{
    if (pending->task == 0 || pending->task != prev)
        return;
    struct pod_latency_key key = {.cgroup = bpf_get_current_cgroup_id()};
    u64 usecs = pending->usecs;
    EXPORTER_OBSERVE(add, &key, key.slot, bpf_log2l(usecs), EXPORTER_SLOTS_SUM, usecs);
}

RAW_TRACEPOINT_PROBE(sched_wakeup)
{
    // TP_PROTO(struct task_struct *p); the idle tasks are never woken.
    enqueue(ctx->args[0], bpf_ktime_get_ns());
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_wakeup_new)
{
    enqueue(ctx->args[0], bpf_ktime_get_ns());
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_switch)
{
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
    //          unsigned int prev_state); it runs before the switch: current is prev.
    u32 zero = 0;
    struct pending_t *pending = pending_latency.lookup(&zero);
    if (!pending)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 prev = ctx->args[1], next = ctx->args[2];
    u32 prev_state = ctx->args[3];
    // Not the wait of a task whose last switch this is: it has left its cgroup's task list
    // (cgroup_exit), so its parent may have reaped it and removed the cgroup meanwhile, and its
    // keys would come back after cgroup_rmdir deleted them (seen 1 cgroup in 2,000). Each
    // process loses the wait before its final stretch of exit.
    if (prev_state != TASK_DEAD)
        count_pending(pending, prev);
    pending->task = 0;

    if (ctx->args[0] || prev_state == TASK_RUNNING) {
        if ((u32)bpf_get_current_pid_tgid() != 0)
            enqueue(prev, now);  // still runnable, and not idle: back in the queue
    } else if (prev_state == TASK_DEAD) {
        queued_at.delete(&prev);
    } else {
        u64 *queued = queued_at.lookup(&prev);
        if (queued)
            *queued = 0;  // it blocks: forget a wakeup that came while it ran
    }

    u64 *queued = queued_at.lookup(&next);
    if (!queued || !*queued)
        return 0;  // idle, queued before we attached, or its wakeup was missed
    pending->usecs = (now - *queued) / 1000;
    pending->task = next;
    *queued = 0;
    return 0;
}

// A cgroup removed: its keys go with it (EXPORTER_CGROUP2_HIERARCHY in the prelude says why
// only v2's). No task can wait in a removed cgroup: no key of it comes back.
TRACEPOINT_PROBE(cgroup, cgroup_rmdir)
{
    if (args->root != EXPORTER_CGROUP2_HIERARCHY)
        return 0;
    struct pod_latency_key key = {.cgroup = args->id};
#pragma clang loop unroll(disable)
    for (u32 slot = 0; slot < EXPORTER_SLOTS; slot++) {
        key.slot = slot;
        pod_runq_latency.delete(&key);
    }
    return 0;
}
