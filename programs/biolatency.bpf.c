// Block I/O latency from issue to completion (biolatency), by device and operation.
// Latency is kept in microseconds as bpf_log2l slots, plus a sum under SUM_SLOT.
#define SUM_SLOT 255  // no log2 slot of a u64 reaches it

struct start_key {
    u32 dev;
    u32 pad;
    u64 sector;
};

struct latency_key {
    u32 dev;
    u8 op;       // first letter of rwbs: R read, W write, D discard, F flush
    u8 pad[3];
    u32 slot;
};

BPF_HASH(start, struct start_key, u64, 10240);
BPF_HASH(bio_latency, struct latency_key, u64, 4096);

TRACEPOINT_PROBE(block, block_rq_issue)
{
    struct start_key key = {.dev = args->dev, .sector = args->sector};
    u64 ts = bpf_ktime_get_ns();
    start.update(&key, &ts);
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_complete)
{
    struct start_key skey = {.dev = args->dev, .sector = args->sector};
    u64 *issued = start.lookup(&skey);
    if (!issued)
        return 0;  // issued before we attached
    u64 usecs = (bpf_ktime_get_ns() - *issued) / 1000;
    start.delete(&skey);

    struct latency_key key = {};
    key.dev = args->dev;
    key.op = args->rwbs[0];
    key.slot = bpf_log2l(usecs);
    bio_latency.increment(key);
    key.slot = SUM_SLOT;
    bio_latency.increment(key, usecs);
    return 0;
}
