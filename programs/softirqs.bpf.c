// Time in softirq handlers by vector (softirqs): softirq_entry -> softirq_exit on each CPU.
// Raw tracepoints: their only argument is the vector number (no struct to read), they skip
// the perf record the classic tracepoint builds, and they are not dropped while another BPF
// program runs on the CPU (a softirq run on the exit of an interrupt that hit one), so every
// softirq the kernel counts in /proc/softirqs is seen.
//
// Softirqs do not nest on a CPU, so the entry time is one per-CPU slot. Durations are kept in
// nanoseconds (most softirqs take a few microseconds) as bpf_log2l slots per vector, plus the
// sum per vector under EXPORTER_SUM_SLOT.
#define MAX_VECS 16   // NR_SOFTIRQS is 10

struct entered {
    u64 ts;  // 0: no softirq known to be running here
    u32 vec;
    u32 pad;
};

struct softirq_key {
    u32 vec;
    u32 slot;
};

BPF_PERCPU_ARRAY(entered, struct entered, 1);
// Per-CPU: timer, rcu and sched softirqs run on every CPU at once, on the same keys. A plain
// hash: the vectors are fixed, their keys never come and go.
BPF_PERCPU_HASH(softirq_time, struct softirq_key, u64, MAX_VECS * 66);

static __always_inline void add(struct softirq_key *key, u64 value)
{
    u64 zero = 0, *slot = softirq_time.lookup(key);
    if (!slot && exporter_key_added(softirq_time.insert(key, &zero), EXPORTER_MAP(softirq_time)))
        slot = softirq_time.lookup(key);
    exporter_add_percpu(slot, value, EXPORTER_MAP(softirq_time));
}

RAW_TRACEPOINT_PROBE(softirq_entry)
{
    // softirq_entry(unsigned int vec_nr)
    u32 zero = 0;
    struct entered *e = entered.lookup(&zero);
    if (!e)
        return 0;
    e->vec = ctx->args[0];
    e->ts = bpf_ktime_get_ns();
    return 0;
}

RAW_TRACEPOINT_PROBE(softirq_exit)
{
    // softirq_exit(unsigned int vec_nr)
    u32 zero = 0;
    struct entered *e = entered.lookup(&zero);
    if (!e || !e->ts)
        return 0;  // entered before we attached
    u32 vec = ctx->args[0];
    u64 ts = e->ts;
    e->ts = 0;
    if (vec != e->vec || vec >= MAX_VECS)
        return 0;
    u64 nsecs = bpf_ktime_get_ns() - ts;

    struct softirq_key key = {.vec = vec};
    EXPORTER_OBSERVE(add, &key, key.slot, bpf_log2l(nsecs), EXPORTER_SUM_SLOT, nsecs);
    return 0;
}
