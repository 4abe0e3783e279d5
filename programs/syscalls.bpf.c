// Syscalls by number (syscount). The hot path of the whole library: a raw tracepoint on
// sys_enter and a per-CPU array indexed by syscall number: no hashing, no atomics, no
// contention between CPUs. Nothing else is done here: failed syscalls (syscall_errors) and
// latency (syslat) are programs of their own, because each needs a probe on sys_exit too,
// which every syscall pays for whether or not it fails.
#define MAX_SYSCALLS 1024

BPF_PERCPU_ARRAY(syscalls_total, u64, MAX_SYSCALLS);

RAW_TRACEPOINT_PROBE(sys_enter)
{
    // raw_syscalls:sys_enter(struct pt_regs *regs, long id)
    u32 nr = ctx->args[1];
    u64 *count = syscalls_total.lookup(&nr);
    if (count)
        (*count)++;
    return 0;
}
