// Kernel timers started (timer:timer_start), by callback function: which subsystems keep
// arming timers, and so keep waking CPUs. The callback is an address taken from the
// tracepoint's own argument; the daemon turns it into a name through /proc/kallsyms.

// A few hundred callbacks exist in a kernel with its modules; a module reloaded at a new
// address is a new key: room for plenty, and LRU so that the old addresses of a module
// reloaded again and again leave (docs/operations.md, Keys that come and go).
BPF_TABLE("lru_percpu_hash", u64, u64, timers_started, 4096);

TRACEPOINT_PROBE(timer, timer_start)
{
    u64 function = (u64)args->function;
    u64 zero = 0, *count = timers_started.lookup(&function);
    if (!count &&
        exporter_key_added(timers_started.insert(&function, &zero), EXPORTER_MAP(timers_started)))
        count = timers_started.lookup(&function);
    exporter_add_percpu(count, 1, EXPORTER_MAP(timers_started));
    return 0;
}
