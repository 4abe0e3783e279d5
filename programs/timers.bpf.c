// Kernel timers started (timer:timer_start), by callback function: which subsystems keep
// arming timers, and so keep waking CPUs. The callback is an address taken from the
// tracepoint's own argument; the daemon turns it into a name through /proc/kallsyms.

// A few hundred callbacks exist in a kernel with its modules; they are never removed, but a
// module reloaded at a new address is a new key: room for plenty.
BPF_PERCPU_HASH(timers_started, u64, u64, 4096);

TRACEPOINT_PROBE(timer, timer_start)
{
    u64 function = (u64)args->function;
    u64 zero = 0;
    // Not .increment(): in bcc 0.26 it silently does nothing on a BPF_PERCPU_HASH.
    u64 *count = timers_started.lookup_or_try_init(&function, &zero);
    if (count)
        *count += 1;  // per-CPU: no other CPU writes this value
    else
        EXPORTER_UPDATE_FAILED(timers_started);
    return 0;
}
