// Time in hard interrupt handlers by handler name (hardirqs): irq_handler_entry ->
// irq_handler_exit, once per handler called (a shared line calls each of its handlers). The
// name is the tracepoint's __data_loc string (the name given to request_irq, as in
// /proc/interrupts); no kernel struct is read. (The raw tracepoint hands a struct irqaction
// instead, whose name needs a struct read. Classic tracepoints have a cost: the kernel drops
// their events while another BPF program or a bpf(2) map operation is running on the CPU the
// interrupt came to, and counts them in the program's recursion_misses.)
//
// Handlers run with interrupts off and do not nest, so the entry time and name are one
// per-CPU slot. Durations are kept in nanoseconds (handlers take about a microsecond) as
// bpf_log2l slots per name, plus the sum per name under EXPORTER_SUM_SLOT.
#define NAME_LEN 32   // as hardirqs; longer names are cut
#define MAX_KEYS 4096 // handler names x slots in use

struct entered {
    u64 ts;  // 0: no handler known to be running here
    s32 irq;
    u32 pad;
    char name[NAME_LEN];
};

struct irq_key {
    char name[NAME_LEN];
    u32 slot;
};

BPF_PERCPU_ARRAY(entered, struct entered, 1);
// Not per-CPU: names are many on big machines (a queue per CPU), and each mostly
// interrupts one CPU, so atomic adds rarely contend. LRU: handler names come and go with
// devices (a NIC's queues, hot-plugged devices; docs/operations.md, Keys that come and go).
BPF_TABLE("lru_hash", struct irq_key, u64, hardirq_time, MAX_KEYS);

static __always_inline void add(struct irq_key *key, u64 value)
{
    u64 zero = 0, *slot = hardirq_time.lookup(key);
    if (!slot && exporter_key_added(hardirq_time.insert(key, &zero), EXPORTER_MAP(hardirq_time)))
        slot = hardirq_time.lookup(key);
    exporter_add(slot, value, EXPORTER_MAP(hardirq_time));
}

TRACEPOINT_PROBE(irq, irq_handler_entry)
{
    u32 zero = 0;
    struct entered *e = entered.lookup(&zero);
    if (!e)
        return 0;
    __builtin_memset(e->name, 0, sizeof(e->name));  // the name is a map key: no stale tail
    TP_DATA_LOC_READ_STR(e->name, name, sizeof(e->name));
    e->irq = args->irq;
    e->ts = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(irq, irq_handler_exit)
{
    u32 zero = 0;
    struct entered *e = entered.lookup(&zero);
    if (!e || !e->ts)
        return 0;  // entry before we attached, or its event was dropped
    u64 nsecs = bpf_ktime_get_ns() - e->ts;
    e->ts = 0;
    if (e->irq != args->irq)
        return 0;

    struct irq_key key = {};
    __builtin_memcpy(key.name, e->name, sizeof(key.name));
    EXPORTER_OBSERVE(add, &key, key.slot, bpf_log2l(nsecs), EXPORTER_SUM_SLOT, nsecs);
    return 0;
}
