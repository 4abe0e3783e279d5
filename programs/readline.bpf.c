// Lines read by interactive bash (bashreadline, without the text): a uretprobe on readline() in
// /bin/bash, counting the returns that carry a line, by the shell's command name. The line
// itself is never read: it would be an unbounded label, and may hold secrets.
#include <uapi/linux/ptrace.h>

struct comm_key {
    char comm[16];  // TASK_COMM_LEN
};

// LRU: shells' comms come and go (docs/operations.md, Keys that come and go).
BPF_TABLE("lru_hash", struct comm_key, u64, readline_lines, 1024);

int on_readline_return(struct pt_regs *ctx)
{
    if (!PT_REGS_RC(ctx))
        return 0;  // NULL: end of input (Ctrl-D), no line
    struct comm_key key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    u64 zero = 0, *count = readline_lines.lookup(&key);
    if (!count &&
        exporter_key_added(readline_lines.insert(&key, &zero), EXPORTER_MAP(readline_lines)))
        count = readline_lines.lookup(&key);
    exporter_add(count, 1, EXPORTER_MAP(readline_lines));
    return 0;
}
