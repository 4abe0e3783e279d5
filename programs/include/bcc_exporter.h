// bcc_exporter's prelude: the daemon puts it before every program it compiles (user programs
// included), so no program needs to #include it. It is the one home of the BPF idioms the
// built-in programs share, as libbpf-tools' bits.bpf.h is theirs:
//   1. failed map updates, counted (EXPORTER_UPDATE_FAILED);
//   2. a counter slot found or added, with added keys counted (exporter_key_added), so that the
//      daemon can tell how many keys left the map (LRU eviction, deletion): see docs/operations.md;
//   3. adding to a slot, with a missing slot counted as a failed update (exporter_add);
//   4. a histogram observation: a bucket slot plus the sum slot (EXPORTER_OBSERVE);
//   5. keys that leave with their subject: a removed cgroup's (EXPORTER_CGROUP2_HIERARCHY).
//
// BCC rewrites map calls (map.lookup(), map.insert()) only where the program spells them,
// never inside a macro ("cannot use map function inside a macro"), and a map is no value a
// function could take. So the program keeps spelling its own map calls; what the idioms add
// around them lives here, as functions on their results and macros naming the map.
//
// 1. Failed map updates. A full BPF hash refuses new keys: an update returns an error and the
// event is lost. A program says so on that branch, naming the map:
//
//     if (start.update(&key, &ts))
//         EXPORTER_UPDATE_FAILED(start);
//
// and the daemon exports bcc_exporter_map_update_failures_total{program,map}.
// - The count is keyed by the map's name as the macro spells it (#map), so nothing has to
//   number the maps: neither the config nor the daemon, which reads the names from the keys.
// - It costs nothing while updates succeed: it runs only on the failure branch. A full map
//   fails every event, so that branch may be hot: the count is per-CPU (no atomics).
// - The macro fails to compile for a name that is not declared or too long for the key.
// One key per map name: EXPORTER_MAX_COUNTED_MAPS distinct maps per program at most.
#define EXPORTER_MAP_NAME_LEN 32
#define EXPORTER_MAX_COUNTED_MAPS 64
#define EXPORTER_EEXIST 17  // include/uapi/asm-generic/errno-base.h

struct exporter_map_name {
    char name[EXPORTER_MAP_NAME_LEN];
};

BPF_PERCPU_HASH(exporter_update_failures, struct exporter_map_name, u64,
                EXPORTER_MAX_COUNTED_MAPS);
// Keys each map's counter idiom added: the daemon subtracts the keys still there.
BPF_PERCPU_HASH(exporter_keys_added, struct exporter_map_name, u64, EXPORTER_MAX_COUNTED_MAPS);

// The map's name as a key of the two maps above: checked at compile time (declared, short
// enough), built on the caller's stack.
#define EXPORTER_MAP(map)                                                                   \
    ((void)sizeof(char[sizeof(#map) <= EXPORTER_MAP_NAME_LEN ? 1 : -1]), /* 31 bytes max */ \
     (void)sizeof(map), /* a name that is not declared fails here */                        \
     &(struct exporter_map_name){#map})

static __always_inline void exporter_update_failed(struct exporter_map_name *map)
{
    u64 zero = 0;
    // Not .increment(): in bcc 0.26 it silently does nothing on a BPF_PERCPU_HASH.
    u64 *count = exporter_update_failures.lookup_or_try_init(map, &zero);
    if (count)
        *count += 1;  // per-CPU: no other CPU writes this value
}

#define EXPORTER_UPDATE_FAILED(map) exporter_update_failed(EXPORTER_MAP(map))

// 2. A counter's slot, found or added: the idiom of every counter in a hash map.
//
//     u64 zero = 0, *count = opens_total.lookup(&key);
//     if (!count && exporter_key_added(opens_total.insert(&key, &zero), EXPORTER_MAP(opens_total)))
//         count = opens_total.lookup(&key);
//     exporter_add(count, 1, EXPORTER_MAP(opens_total));
//
// Not BCC's lookup_or_try_init(): it cannot tell a key it added from one another CPU added
// meanwhile, and the count of added keys must be exact (keys gone = added - present).
// insert() is BPF_NOEXIST: 0 when this call added the key, -EEXIST when another CPU did first
// (then look it up all the same), another error when the map is full (the slot stays NULL and
// exporter_add() counts the failure). An LRU map never refuses: it evicts its least recently
// used key instead, silently, which the count of added keys makes visible.
static __always_inline bool exporter_key_added(long err, struct exporter_map_name *map)
{
    if (err == -EXPORTER_EEXIST)
        return true;
    if (err)
        return false;
    u64 zero = 0;
    u64 *added = exporter_keys_added.lookup_or_try_init(map, &zero);
    if (added)
        *added += 1;  // per-CPU
    return true;
}

// 3. Adds to a slot; a NULL slot (the map is full, or the key was evicted between its insert
// and lookup) loses the event, which is counted. exporter_add() for maps every CPU shares
// (atomic), exporter_add_percpu() for per-CPU ones (no other CPU writes the value).
static __always_inline void exporter_add(u64 *slot, u64 value, struct exporter_map_name *map)
{
    if (slot)
        __sync_fetch_and_add(slot, value);
    else
        exporter_update_failed(map);
}

static __always_inline void exporter_add_percpu(u64 *slot, u64 value,
                                                struct exporter_map_name *map)
{
    if (slot)
        *slot += value;
    else
        exporter_update_failed(map);
}

// 4. Histograms: a count in the value's bucket slot, and the value added to the sum slot,
// through the program's own add(key, amount) (which spells the map calls). `slot` is the
// field of the key (or the array index) that holds the slot.
//
//     EXPORTER_OBSERVE(add, &key, key.slot, bpf_log2l(usecs), EXPORTER_SUM_SLOT, usecs);
//
// Sum slots: EXPORTER_SUM_SLOT in a hash key (no log2 slot of a u64 reaches it); or
// EXPORTER_SLOTS_SUM, the last of EXPORTER_SLOTS slots, where the slots must be few: an array
// indexed by slot, or keys deleted slot by slot (5. below). Log2 slots of values below 2^63
// stay under it: 2^63 microseconds are 292,000 years.
#define EXPORTER_SUM_SLOT 255
#define EXPORTER_SLOTS 64
#define EXPORTER_SLOTS_SUM 63
#define EXPORTER_OBSERVE(add, key, slot, bucket, sum_slot, value)                           \
    ({                                                                                      \
        slot = (bucket);                                                                    \
        add(key, 1);                                                                        \
        slot = (sum_slot);                                                                  \
        add(key, value);                                                                    \
    })

// 5. Keys that leave with their subject. Keys of a map that come and go with processes, pods
// or devices must not fill it for good: such a map is an LRU hash (a full one evicts the key
// used longest ago to make room, see 2.), and where the subject's end is an event, the program
// deletes its keys then. A cgroup's end is cgroup:cgroup_rmdir; its record's `id` is the
// cgroup id bpf_get_current_cgroup_id() gives (the kernfs id), but only on the cgroup v2
// hierarchy (`root` 0): a v1 hierarchy numbers its cgroups apart, and its ids may be those of
// live v2 cgroups. A cgroup id is never reused while the kernel runs (64-bit, increasing), so
// keys deleted with their cgroup never come back.
//
//     TRACEPOINT_PROBE(cgroup, cgroup_rmdir)
//     {
//         if (args->root != EXPORTER_CGROUP2_HIERARCHY)
//             return 0;
//         struct pod_key key = {.cgroup = args->id};
//         #pragma clang loop unroll(disable)
//         for (u32 slot = 0; slot < EXPORTER_SLOTS; slot++) { key.slot = slot; map.delete(&key); }
//         return 0;
//     }
#define EXPORTER_CGROUP2_HIERARCHY 0
