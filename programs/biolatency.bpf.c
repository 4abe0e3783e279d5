// Block I/O by device and operation, from the block tracepoints' own arguments:
// - latency from issue to completion (biolatency), microseconds as bpf_log2l slots;
// - time queued in the I/O scheduler, from insert to issue (biolatency -Q's extra part);
// - request size at issue (bitesize), bytes as ceil(log2) slots.
// A request is identified by (device, sector), as bcc's tracepoint-based tools do: no
// struct request is ever read. Each histogram keeps the sum of its values under
// EXPORTER_SUM_SLOT (EXPORTER_OBSERVE, programs/include/bcc_exporter.h).

struct rq_key {
    u32 dev;
    u32 pad;
    u64 sector;
};

struct io_key {
    u32 dev;     // kernel dev_t, as the tracepoints give it
    u8 op;       // first letter of rwbs: R read, W write, D discard, F flush, N none
    u8 pad[3];
    u32 slot;
};

// Timestamps by request. LRU: an entry whose request never shows up again (merged away in
// the scheduler, or front-merged so its sector changed) is evicted rather than filling the map.
BPF_TABLE("lru_hash", struct rq_key, u64, start, 10240);     // issue time, requests in flight
BPF_TABLE("lru_hash", struct rq_key, u64, inserted, 10240);  // insert time, queued requests
// LRU: devices come and go (loop devices, hot-plugged disks); the keys of one gone for longest
// make room for a new one's (docs/operations.md, Keys that come and go).
BPF_TABLE("lru_hash", struct io_key, u64, bio_latency, 8192);
BPF_TABLE("lru_hash", struct io_key, u64, bio_queued, 8192);
BPF_TABLE("lru_hash", struct io_key, u64, bio_size, 8192);

// Data-less requests (flushes) trace sector 0 at issue but may trace -1 at completion:
// key them all at sector 0, so a flush is matched with its own issue.
static __always_inline struct rq_key rq_key(u32 dev, u64 sector, u32 size)
{
    struct rq_key key = {};
    key.dev = dev;
    key.sector = size ? sector : 0;
    return key;
}

static __always_inline struct io_key io_key(u32 dev, char op, u32 slot)
{
    struct io_key key = {};
    key.dev = dev;
    key.op = op;
    key.slot = slot;
    return key;
}

// ceil(log2(bytes)): slot k holds 2^(k-1) < bytes <= 2^k, so a request of exactly 64 KiB
// is in le="65536" (bpf_log2l alone would put powers of two, the common sizes, one up).
static __always_inline u32 size_slot(u64 bytes)
{
    return bytes <= 1 ? 0 : bpf_log2l(bytes - 1);
}

// Adds to a slot of each histogram (the counter idiom of programs/include/bcc_exporter.h).
static __always_inline void add_latency(struct io_key *key, u64 value)
{
    u64 zero = 0, *slot = bio_latency.lookup(key);
    if (!slot && exporter_key_added(bio_latency.insert(key, &zero), EXPORTER_MAP(bio_latency)))
        slot = bio_latency.lookup(key);
    exporter_add(slot, value, EXPORTER_MAP(bio_latency));
}

static __always_inline void add_queued(struct io_key *key, u64 value)
{
    u64 zero = 0, *slot = bio_queued.lookup(key);
    if (!slot && exporter_key_added(bio_queued.insert(key, &zero), EXPORTER_MAP(bio_queued)))
        slot = bio_queued.lookup(key);
    exporter_add(slot, value, EXPORTER_MAP(bio_queued));
}

static __always_inline void add_size(struct io_key *key, u64 value)
{
    u64 zero = 0, *slot = bio_size.lookup(key);
    if (!slot && exporter_key_added(bio_size.insert(key, &zero), EXPORTER_MAP(bio_size)))
        slot = bio_size.lookup(key);
    exporter_add(slot, value, EXPORTER_MAP(bio_size));
}

TRACEPOINT_PROBE(block, block_rq_insert)
{
    struct rq_key key = rq_key(args->dev, args->sector, args->nr_sector);
    u64 ts = bpf_ktime_get_ns();
    if (inserted.update(&key, &ts))
        EXPORTER_UPDATE_FAILED(inserted);
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_issue)
{
    struct rq_key key = rq_key(args->dev, args->sector, args->nr_sector);
    u64 ts = bpf_ktime_get_ns();
    if (start.update(&key, &ts))
        EXPORTER_UPDATE_FAILED(start);

    char op = args->rwbs[0];
    u64 bytes = args->bytes;
    struct io_key size = io_key(args->dev, op, 0);
    EXPORTER_OBSERVE(add_size, &size, size.slot, size_slot(bytes), EXPORTER_SUM_SLOT, bytes);

    // Requests the block layer issues directly, without a scheduler, were never inserted.
    u64 *queued = inserted.lookup(&key);
    if (queued) {
        u64 usecs = (ts - *queued) / 1000;
        inserted.delete(&key);
        struct io_key wait = io_key(args->dev, op, 0);
        EXPORTER_OBSERVE(add_queued, &wait, wait.slot, bpf_log2l(usecs), EXPORTER_SUM_SLOT, usecs);
    }
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_complete)
{
    struct rq_key key = rq_key(args->dev, args->sector, args->nr_sector);
    u64 *issued = start.lookup(&key);
    if (!issued)
        return 0;  // issued before we attached
    u64 usecs = (bpf_ktime_get_ns() - *issued) / 1000;
    start.delete(&key);
    struct io_key latency = io_key(args->dev, args->rwbs[0], 0);
    EXPORTER_OBSERVE(add_latency, &latency, latency.slot, bpf_log2l(usecs), EXPORTER_SUM_SLOT,
                     usecs);
    return 0;
}
