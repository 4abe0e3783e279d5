// On-CPU time slices (cpudist): how long tasks run on a CPU each time they get one, from
// sched_switch onto the CPU to sched_switch off it, system-wide. The idle tasks (pid 0) are
// left out, as cpudist does without -I. Kernel data comes only from tracepoint arguments.
//
// What runs on a CPU is one task at a time, so the slice start is a per-CPU slot (no hash, no
// entry to go stale). Slices are kept in microseconds as bpf_log2l slots of a per-CPU array,
// plus their sum under SUM_SLOT (bpf_log2l of a microsecond count stays below 63).
#define SLOTS 64
#define SUM_SLOT 63
// cflags: ["-DTARGET_PID=1234"] measures that one thread only (tests compare it with the
// kernel's own account in /proc/PID/schedstat).
#ifdef TARGET_PID
#define WANTED(pid) ((pid) == TARGET_PID)
#else
#define WANTED(pid) ((pid) != 0)
#endif

struct oncpu {
    u64 since;  // 0: nothing (non-idle) known to be running here
    u32 pid;
    u32 pad;
};

BPF_PERCPU_ARRAY(running, struct oncpu, 1);
BPF_PERCPU_ARRAY(oncpu_time, u64, SLOTS);

TRACEPOINT_PROBE(sched, sched_switch)
{
    u32 zero = 0;
    struct oncpu *cur = running.lookup(&zero);
    if (!cur)
        return 0;
    u64 now = bpf_ktime_get_ns();

    if (cur->since && cur->pid == (u32)args->prev_pid) {
        u64 usecs = (now - cur->since) / 1000;
        u32 slot = bpf_log2l(usecs);
        u64 *count = oncpu_time.lookup(&slot);
        if (count)
            (*count)++;
        u32 sum_slot = SUM_SLOT;
        u64 *sum = oncpu_time.lookup(&sum_slot);
        if (sum)
            *sum += usecs;
    }

    cur->pid = args->next_pid;
    cur->since = WANTED(args->next_pid) ? now : 0;
    return 0;
}
