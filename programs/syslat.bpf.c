// Syscall latency by syscall (syscount -L as a histogram): time from raw_syscalls:sys_enter
// to raw_syscalls:sys_exit of the same thread, in nanoseconds as bpf_log2l slots, plus the sum
// per syscall under EXPORTER_SUM_SLOT.
//
// Its own program, apart from `syscalls`, because it is not cheap: every syscall pays a hash
// update at entry and a lookup, a delete and a histogram update at exit (~0.2 us per syscall
// measured, more than a cheap syscall itself), where `syscalls` pays one array slot.
#define MAX_SYSCALLS 1024

struct start_t {
    u64 ts;
    u32 nr;
    u32 pad;
};

struct latency_key {
    u32 nr;
    u32 slot;
};

// Per thread: when its current syscall started, and which one. LRU: threads that never come
// back (exit, exit_group, a thread replaced by a multi-threaded exec) are evicted by newer ones
// instead of filling the map.
BPF_TABLE("lru_hash", u32, struct start_t, syscall_start, 16384);
// Per-CPU: the hot keys (futex, read in the same slot on every CPU) cost no atomics. A plain
// hash: syscalls are a fixed set, their keys never come and go.
BPF_PERCPU_HASH(syscall_latency, struct latency_key, u64, 8192);

RAW_TRACEPOINT_PROBE(sys_enter)
{
    // raw_syscalls:sys_enter(struct pt_regs *regs, long id)
    long id = ctx->args[1];
    if (id < 0 || id >= MAX_SYSCALLS)
        return 0;
    u32 tid = bpf_get_current_pid_tgid();
    struct start_t start = {.ts = bpf_ktime_get_ns(), .nr = id};
    if (syscall_start.update(&tid, &start))
        EXPORTER_UPDATE_FAILED(syscall_start);
    return 0;
}

static __always_inline void add(struct latency_key *key, u64 value)
{
    u64 zero = 0, *slot = syscall_latency.lookup(key);
    if (!slot &&
        exporter_key_added(syscall_latency.insert(key, &zero), EXPORTER_MAP(syscall_latency)))
        slot = syscall_latency.lookup(key);
    exporter_add_percpu(slot, value, EXPORTER_MAP(syscall_latency));
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
    // raw_syscalls:sys_exit(struct pt_regs *regs, long ret): no syscall number, hence the
    // one remembered at entry.
    u32 tid = bpf_get_current_pid_tgid();
    struct start_t *start = syscall_start.lookup(&tid);
    if (!start)
        return 0;  // entered before we attached
    u64 ns = bpf_ktime_get_ns() - start->ts;
    struct latency_key key = {.nr = start->nr};
    syscall_start.delete(&tid);
    EXPORTER_OBSERVE(add, &key, key.slot, bpf_log2l(ns), EXPORTER_SUM_SLOT, ns);
    return 0;
}
