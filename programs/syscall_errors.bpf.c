// Failed syscalls by number and errno (syscount -x).
//
// The classic raw_syscalls:sys_exit tracepoint: its record carries the syscall number
// (args->id) beside the return value. The raw sys_exit tracepoint gives only a pt_regs pointer
// and the return value: the number would have to be read out of pt_regs (a struct read) or
// remembered per thread at every entry (a hash update on every syscall, what syslat pays).
// Here every syscall pays the tracepoint's record and an early return; a map update happens
// only when the syscall fails. A program apart from `syscalls`, so that the counter's hot path
// stays a raw tracepoint and an array slot.
#define MAX_SYSCALLS 1024
#define MAX_ERRNO 4095  // include/linux/err.h: return values -4095..-1 are errors

struct error_key {
    u32 nr;
    u32 err;  // positive errno
};

// Per-CPU: a hot failure (EAGAIN of non-blocking reads on every CPU) costs no atomics.
// A few hundred (syscall, errno) pairs occur in practice, and they do not come and go with
// processes: a plain hash, whose keys stay.
BPF_PERCPU_HASH(syscall_errors_total, struct error_key, u64, 4096);

TRACEPOINT_PROBE(raw_syscalls, sys_exit)
{
    long ret = args->ret;
    if (ret >= 0 || ret < -MAX_ERRNO)
        return 0;
    long id = args->id;
    if (id < 0 || id >= MAX_SYSCALLS)
        return 0;
    struct error_key key = {.nr = id, .err = -ret};
    u64 zero = 0, *count = syscall_errors_total.lookup(&key);
    if (!count && exporter_key_added(syscall_errors_total.insert(&key, &zero),
                                     EXPORTER_MAP(syscall_errors_total)))
        count = syscall_errors_total.lookup(&key);
    exporter_add_percpu(count, 1, EXPORTER_MAP(syscall_errors_total));
    return 0;
}
