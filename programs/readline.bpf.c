// Lines read by interactive bash (bashreadline, without the text): a uretprobe on readline() in
// /bin/bash, counting the returns that carry a line, by the shell's command name. The line
// itself is never read: it would be an unbounded label, and may hold secrets.
#include <uapi/linux/ptrace.h>

struct comm_key {
    char comm[16];  // TASK_COMM_LEN
};

BPF_HASH(readline_lines, struct comm_key, u64, 1024);

int on_readline_return(struct pt_regs *ctx)
{
    if (!PT_REGS_RC(ctx))
        return 0;  // NULL: end of input (Ctrl-D), no line
    struct comm_key key = {};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    u64 zero = 0, *count = readline_lines.lookup_or_try_init(&key, &zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        EXPORTER_UPDATE_FAILED(readline_lines);
    return 0;
}
