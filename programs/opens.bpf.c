// open(2), openat(2) and openat2(2) by the caller's comm and result (opensnoop, opensnoop -x,
// aggregated in the kernel). Only the exit matters: the result is there, and the comm is the
// caller's either way.
//
// The function is attached to tracepoint:syscalls:sys_exit_open* (see config/opens.yaml):
// that matches the three where they exist (arm64 has no open(2), kernels before 5.6 no
// openat2) and also open_by_handle_at, open_tree and open_tree_attr, which are left out here
// by syscall number, as opensnoop leaves them out. The record layout is the same for every
// syscall exit event; BCC generates it from the running kernel's sys_exit_openat format.
#include <asm/unistd.h>

#define MAX_ERRNO 4095  // include/linux/err.h: return values -4095..-1 are errors
#ifndef MAX_KEYS
#define MAX_KEYS 10240  // comm x result pairs; cflags ["-DMAX_KEYS=4"] churn it in tests
#endif
// cflags ['-DCOMM_PREFIX="bccx"'] counts only the comms that start so (tests fill a tiny map
// with their own comms alone, whatever else the machine opens meanwhile).

struct opens_key {
    char comm[16];  // TASK_COMM_LEN
    s32 err;        // 0 for success, else the positive errno
};

// LRU: comms come and go (every short-lived process may bring its own); when the map is full,
// the key of the comm that opened nothing for longest makes room for a new one, rather than
// the new comm never being counted (docs/operations.md, Keys that come and go).
BPF_TABLE("lru_hash", struct opens_key, u64, opens_total, MAX_KEYS);

int count_open(struct tracepoint__syscalls__sys_exit_openat *args)
{
    int nr = args->__syscall_nr;
    if (nr != __NR_openat
#ifdef __NR_open
        && nr != __NR_open
#endif
#ifdef __NR_openat2
        && nr != __NR_openat2
#endif
    )
        return 0;
    struct opens_key key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
#ifdef COMM_PREFIX
    const char prefix[] = COMM_PREFIX;
    for (int i = 0; i < sizeof(prefix) - 1; i++)
        if (key.comm[i] != prefix[i])
            return 0;
#endif
    long ret = args->ret;
    if (ret < 0 && ret >= -MAX_ERRNO)
        key.err = -ret;
    u64 zero = 0, *count = opens_total.lookup(&key);
    if (!count && exporter_key_added(opens_total.insert(&key, &zero), EXPORTER_MAP(opens_total)))
        count = opens_total.lookup(&key);
    exporter_add(count, 1, EXPORTER_MAP(opens_total));
    return 0;
}
