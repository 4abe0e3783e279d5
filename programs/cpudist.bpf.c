// On-CPU time slices (cpudist): how long tasks run on a CPU each time they get one, from
// sched_switch onto the CPU to sched_switch off it, system-wide. The idle tasks (pid 0) are
// left out, as cpudist does without -I.
//
// A raw tracepoint, for the hot path's price: a classic tracepoint copies its record (two comms,
// pids, prios) into a buffer before the program runs, and the kernel drops classic events while
// any other BPF program runs on the CPU (raw ones only while this same program does). Its task
// pointers are compared, never dereferenced (the headers need not match the kernel); the pid of
// the task leaving the CPU is bpf_get_current_pid_tgid()'s, as the tracepoint runs before the
// switch.
//
// What runs on a CPU is one task at a time, so the slice start is a per-CPU slot (no hash, no
// entry to go stale). Slices are kept in microseconds as bpf_log2l slots of a per-CPU array,
// plus their sum under EXPORTER_SLOTS_SUM (EXPORTER_OBSERVE).
// cflags: ["-DTARGET_PID=1234"] measures that one thread only (tests compare it with the
// kernel's own account in /proc/PID/schedstat).
#ifdef TARGET_PID
#define WANTED(pid) ((pid) == TARGET_PID)
#else
#define WANTED(pid) ((pid) != 0)
#endif

struct oncpu {
    u64 since;  // 0: no switch seen on this CPU yet
    u64 task;   // the task_struct pointer of what runs here
};

BPF_PERCPU_ARRAY(running, struct oncpu, 1);
BPF_PERCPU_ARRAY(oncpu_time, u64, EXPORTER_SLOTS);

static __always_inline void add(u32 *slot, u64 value)
{
    u64 *count = oncpu_time.lookup(slot);
    if (count)
        *count += value;  // per-CPU: no other CPU writes this value
}

RAW_TRACEPOINT_PROBE(sched_switch)
{
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, ...)
    u32 zero = 0;
    struct oncpu *cur = running.lookup(&zero);
    if (!cur)
        return 0;
    u64 now = bpf_ktime_get_ns();

    // The idle task is known only when it leaves the CPU (pid 0): its slice is not counted.
    if (cur->since && cur->task == ctx->args[1] && WANTED((u32)bpf_get_current_pid_tgid())) {
        u64 usecs = (now - cur->since) / 1000;
        u32 slot;
        EXPORTER_OBSERVE(add, &slot, slot, bpf_log2l(usecs), EXPORTER_SLOTS_SUM, usecs);
    }

    cur->task = ctx->args[2];
    cur->since = now;
    return 0;
}
