// Run-queue latency (runqlat): how long runnable tasks wait for a CPU, system-wide. A task
// starts waiting when it is woken (sched_wakeup, sched_wakeup_new) or when it leaves a CPU
// still runnable (preempted or yielding: sched_switch with prev_state "R" or "R+"), and stops
// when sched_switch puts it on a CPU. The idle tasks (pid 0) are left out, as runqlat does.
// Kernel data comes only from tracepoint arguments: no task_struct reads (the raw tracepoints
// hand task_struct pointers). The kernel drops classic tracepoint events while another BPF
// program or a bpf(2) map operation runs on the CPU (a wakeup from an interrupt, say): those
// latencies are missing, counted in the program's recursion_misses.
//
// Latency is kept in microseconds as bpf_log2l slots of a per-CPU array, plus their sum under
// EXPORTER_SLOTS_SUM (EXPORTER_OBSERVE).
#define MAX_QUEUED 10240  // tasks runnable at once, not yet on a CPU
// prev_state is the reported state: 0 for "R", bit TASK_REPORT_MAX set for a preempted
// task ("R+"), a state bit below it ("S", "D", ...) for a task that blocks. Linux >= 4.14.
#define TASK_REPORT_MAX 0x100
// cflags: ["-DTARGET_PID=1234"] measures that one thread only (tests compare it with the
// kernel's own account in /proc/PID/schedstat).
#ifdef TARGET_PID
#define WANTED(pid) ((pid) == TARGET_PID)
#else
#define WANTED(pid) ((pid) != 0)
#endif

// An LRU hash: entries of tasks whose next event we miss (a wakeup while another BPF program
// runs on that CPU is dropped by the kernel: recursion_misses) cannot fill the map for good.
BPF_TABLE("lru_hash", u32, u64, queued_at, MAX_QUEUED);
BPF_PERCPU_ARRAY(runq_latency, u64, EXPORTER_SLOTS);

static __always_inline void add(u32 *slot, u64 value)
{
    u64 *count = runq_latency.lookup(slot);
    if (count)
        *count += value;  // per-CPU: no other CPU writes this value
}

static __always_inline void enqueue(u32 pid)
{
    if (!WANTED(pid))
        return;
    u64 ts = bpf_ktime_get_ns();
    if (queued_at.update(&pid, &ts))
        EXPORTER_UPDATE_FAILED(queued_at);
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
    u32 prev = args->prev_pid;
    if ((args->prev_state & (TASK_REPORT_MAX - 1)) == 0)
        enqueue(prev);  // still runnable: back in the queue
    else if (WANTED(prev))
        // It blocks: forget a wakeup that came while it still ran (it never queued), so that
        // a later wakeup we miss cannot make its next run look queued since then.
        queued_at.delete(&prev);

    u32 pid = args->next_pid;
    if (!WANTED(pid))
        return 0;
    u64 *queued = queued_at.lookup(&pid);
    if (!queued)
        return 0;  // queued before we attached, or its wakeup was missed
    u64 usecs = (bpf_ktime_get_ns() - *queued) / 1000;
    queued_at.delete(&pid);

    u32 slot;
    EXPORTER_OBSERVE(add, &slot, slot, bpf_log2l(usecs), EXPORTER_SLOTS_SUM, usecs);
    return 0;
}
