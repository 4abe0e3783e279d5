// openat(2) calls by the calling task's comm (opensnoop's view, aggregated in the kernel).
struct opens_key {
    char comm[16];  // TASK_COMM_LEN
};

BPF_HASH(openat_calls_total, struct opens_key, u64, 10240);

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    struct opens_key key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    openat_calls_total.increment(key);
    return 0;
}
