// OOM kills by the victim's comm (oomkill), from oom:mark_victim, which the OOM killer fires
// for each victim it picks, for the whole machine and for a memory cgroup over its limit
// alike. It fires in the task that ran out of memory, not in the victim: the victim's comm
// comes from the record (args->comm), not from bpf_get_current_comm(). Older kernels' record
// has the victim's pid only (comm came later, with total_vm, anon_rss and the rest); there
// this program does not compile. The way to serve them without struct reads: remember the pid at
// mark_victim and count the comm of sched_process_exit for that pid.
struct victim_key {
    char comm[16];  // TASK_COMM_LEN
};

// LRU: victims' comms come and go (docs/operations.md, Keys that come and go).
BPF_TABLE("lru_hash", struct victim_key, u64, oom_kills_total, 1024);

TRACEPOINT_PROBE(oom, mark_victim)
{
    struct victim_key key = {};
    TP_DATA_LOC_READ_STR(&key.comm, comm, sizeof(key.comm));
    u64 zero = 0, *count = oom_kills_total.lookup(&key);
    if (!count &&
        exporter_key_added(oom_kills_total.insert(&key, &zero), EXPORTER_MAP(oom_kills_total)))
        count = oom_kills_total.lookup(&key);
    exporter_add(count, 1, EXPORTER_MAP(oom_kills_total));
    return 0;
}
