// bcc_exporter's prelude: the daemon puts it before every program it compiles (user programs
// included), so no program needs to #include it.
//
// Failed map updates, counted in the kernel. A full BPF hash refuses new keys: an update
// returns an error, lookup_or_try_init() returns NULL, and the event is lost. A program says
// so on that branch, naming the map:
//
//     u64 zero = 0, *count = opens_total.lookup_or_try_init(&key, &zero);
//     if (count)
//         __sync_fetch_and_add(count, 1);
//     else
//         EXPORTER_UPDATE_FAILED(opens_total);
//
//     if (start.update(&key, &ts))
//         EXPORTER_UPDATE_FAILED(start);
//
// and the daemon exports bcc_exporter_map_update_failures_total{program,map}.
//
// Why this shape:
// - The count is keyed by the map's name as the macro spells it (#map), so nothing has to
//   number the maps: neither the config nor the daemon, which reads the names from the keys.
// - It costs nothing while updates succeed: it runs only on the failure branch, which the
//   program has anyway. A full map fails every event, so that branch may be hot: the count is
//   per-CPU (no atomics, no cache line shared between CPUs).
// - A macro on the failure branch, not one wrapping the update (UPDATE_OR_COUNT(map, ...)):
//   BCC rewrites map calls only where the program spells them, never inside a macro ("cannot
//   use map function inside a macro"), so the program keeps its own call.
// - The macro fails to compile for a name that is not declared or too long for the key.
//
// One key per map name: EXPORTER_MAX_COUNTED_MAPS distinct maps per program at most.
#define EXPORTER_MAP_NAME_LEN 32
#define EXPORTER_MAX_COUNTED_MAPS 64

struct exporter_map_name {
    char name[EXPORTER_MAP_NAME_LEN];
};

BPF_PERCPU_HASH(exporter_update_failures, struct exporter_map_name, u64,
                EXPORTER_MAX_COUNTED_MAPS);

static __always_inline void exporter_update_failed(struct exporter_map_name *map)
{
    u64 zero = 0;
    // Not .increment(): in bcc 0.26 it silently does nothing on a BPF_PERCPU_HASH.
    u64 *count = exporter_update_failures.lookup_or_try_init(map, &zero);
    if (count)
        *count += 1;  // per-CPU: no other CPU writes this value
}

#define EXPORTER_UPDATE_FAILED(map)                                                         \
    ({                                                                                      \
        _Static_assert(sizeof(#map) <= EXPORTER_MAP_NAME_LEN,                               \
                       "EXPORTER_UPDATE_FAILED: map name longer than 31 bytes: " #map);     \
        (void)sizeof(map); /* a name that is not declared fails here */                     \
        struct exporter_map_name _exporter_map = {};                                        \
        __builtin_memcpy(_exporter_map.name, #map, sizeof(#map));                           \
        exporter_update_failed(&_exporter_map);                                             \
    })
