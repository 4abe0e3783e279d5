// Process lifecycle by comm: execs (execsnoop), new tasks (fork/vfork/clone, as processes or
// threads), and process exits by class (exitsnoop's exit code or signal, as a class).
//
// Execs are also counted by the parent's comm (execsnoop's PPID, by name), read from
// task_struct through BTF. Otherwise tracepoint arguments and helpers only. The exit code lives
// in task_struct, which this program does not read (see docs/operations.md, Kernel headers); the class is pieced together from the
// events that lead to an exit instead:
//   exit_group(code), or exit(code) by the thread group leader   -> ok (code 0) or error
//   a signal delivered with its default action "terminate"        -> signal
//   a signal delivered with its default action "core dump"        -> core
//   none of these seen (kernel threads; tasks already exiting at attach) -> other
// A fatal signal never overwrites a cause already seen: a process that calls exit_group(0)
// takes its other threads down with SIGKILL, and that must not turn "ok" into "signal". An exit
// call overwrites a signal: a process that called exit after a "fatal" signal was not killed by
// it (the init of a PID namespace ignores them). A process is counted once, when its thread
// group leader exits: a leader that ends before its threads (pthread_exit in main) is counted
// then, with its own exit(2) code; a thread other than the leader that calls execve takes the
// leader's place, and the old leader, killed by the kernel, is counted as an exit (signal).
#define CLONE_THREAD 0x00010000  // include/uapi/linux/sched.h

enum exit_class {
    EXIT_OK = 0,
    EXIT_ERROR = 1,
    EXIT_SIGNAL = 2,
    EXIT_CORE = 3,
    EXIT_OTHER = 4,
};

struct comm_key {
    char comm[16];  // TASK_COMM_LEN
};

struct fork_key {
    char comm[16];
    u32 thread;  // 1 for CLONE_THREAD
};

struct exit_key {
    char comm[16];
    u32 class;
};

// Who starts what: the new program's comm and its parent's (task->real_parent->comm, read at
// the running kernel's offsets through BTF: programs/include/bcc_btf.h).
struct exec_parent_key {
    char comm[16];
    char parent[16];
};

// LRU: comms come and go; a full map makes room for a new comm by evicting the one counted
// longest ago, rather than never counting new comms (docs/operations.md, Keys that come and go).
BPF_TABLE("lru_hash", struct comm_key, u64, execs_total, 10240);
BPF_TABLE("lru_hash", struct exec_parent_key, u64, execs_by_parent_total, 10240);
BPF_TABLE("lru_hash", struct fork_key, u64, forks_total, 10240);
BPF_TABLE("lru_hash", struct exit_key, u64, exits_total, 10240);
// tgid -> the first exit cause seen. LRU: a cause recorded after its leader is gone (the
// leader called pthread_exit first) is evicted by newer ones rather than filling the map.
BPF_TABLE("lru_hash", u32, u32, exit_cause, 10240);

// The parent is the process that will wait() for it (its real parent: a reaper once the
// parent has exited), not a tracer.
static __always_inline void count_exec_parent(struct comm_key *exec)
{
    struct exec_parent_key key = {};
    __builtin_memcpy(key.comm, exec->comm, sizeof(key.comm));
    void *task = (void *)bpf_get_current_task();
    BTF_READ_INTO(key.parent, task, struct task_struct, real_parent->comm);
    u64 zero = 0, *count = execs_by_parent_total.lookup(&key);
    if (!count && exporter_key_added(execs_by_parent_total.insert(&key, &zero),
                                     EXPORTER_MAP(execs_by_parent_total)))
        count = execs_by_parent_total.lookup(&key);
    exporter_add(count, 1, EXPORTER_MAP(execs_by_parent_total));
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    struct comm_key key = {};
    // The new program's name: begin_new_exec() has set it before this tracepoint.
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    u64 zero = 0, *count = execs_total.lookup(&key);
    if (!count && exporter_key_added(execs_total.insert(&key, &zero), EXPORTER_MAP(execs_total)))
        count = execs_total.lookup(&key);
    exporter_add(count, 1, EXPORTER_MAP(execs_total));
    count_exec_parent(&key);
    return 0;
}

TRACEPOINT_PROBE(task, task_newtask)
{
    // In the parent, for every new task; args->comm is the parent's, copied to the child.
    struct fork_key key = {};
    bpf_probe_read_kernel(&key.comm, sizeof(key.comm), args->comm);
    key.thread = (args->clone_flags & CLONE_THREAD) ? 1 : 0;
    u64 zero = 0, *count = forks_total.lookup(&key);
    if (!count && exporter_key_added(forks_total.insert(&key, &zero), EXPORTER_MAP(forks_total)))
        count = forks_total.lookup(&key);
    exporter_add(count, 1, EXPORTER_MAP(forks_total));
    if (!key.thread) {
        u32 tgid = args->pid;  // a new process: forget a cause left by an earlier one
        exit_cause.delete(&tgid);
    }
    return 0;
}

static __always_inline void exit_called(long code, bool group)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!group && (u32)id != tgid)
        return;  // exit(2) of a thread that is not the leader ends only that thread
    u32 class = (code & 0xff) ? EXIT_ERROR : EXIT_OK;  // the status a parent's wait() sees
    if (exit_cause.update(&tgid, &class))
        EXPORTER_UPDATE_FAILED(exit_cause);
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
    exit_called(args->error_code, true);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit)
{
    exit_called(args->error_code, false);
    return 0;
}

// Default actions of include/linux/signal.h (the generic numbering of x86, arm64 and most
// others): ignored or stopping signals leave the process alive; core-dumping ones count apart.
#define SIGMASK(sig) (1ULL << (sig))
#define IGNORE_OR_STOP                                                                      \
    (SIGMASK(17) | SIGMASK(18) | SIGMASK(19) | SIGMASK(20) | SIGMASK(21) | SIGMASK(22) |   \
     SIGMASK(23) | SIGMASK(28))  // CHLD CONT STOP TSTP TTIN TTOU URG WINCH
#define COREDUMP                                                                            \
    (SIGMASK(3) | SIGMASK(4) | SIGMASK(5) | SIGMASK(6) | SIGMASK(7) | SIGMASK(8) |         \
     SIGMASK(11) | SIGMASK(24) | SIGMASK(25) | SIGMASK(31))  // QUIT ILL TRAP ABRT BUS FPE SEGV XCPU XFSZ SYS

TRACEPOINT_PROBE(signal, signal_deliver)
{
    // In the receiving thread, as it acts on the signal. A fatal signal without a core dump
    // shows as SIGKILL here (the kernel turns it into a group exit), so only its class is
    // kept, not its number.
    if (args->sa_handler != 0)  // SIG_DFL is 0: a handler or SIG_IGN keeps the process alive
        return 0;
    int sig = args->sig;
    if (sig <= 0 || sig > 64)
        return 0;
    u64 bit = sig < 64 ? SIGMASK(sig) : 0;  // 64 is SIGRTMAX: terminates
    if (bit & IGNORE_OR_STOP)
        return 0;
    u32 class = (bit & COREDUMP) ? EXIT_CORE : EXIT_SIGNAL;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    long err = exit_cause.insert(&tgid, &class);
    if (err && err != -EXPORTER_EEXIST)  // a cause already seen is kept: not a failure
        EXPORTER_UPDATE_FAILED(exit_cause);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if ((u32)id != tgid)
        return 0;  // a thread; the process ends with its leader
    struct exit_key key = {};
    bpf_probe_read_kernel(&key.comm, sizeof(key.comm), args->comm);
    u32 *cause = exit_cause.lookup(&tgid);
    key.class = cause ? *cause : EXIT_OTHER;
    exit_cause.delete(&tgid);
    u64 zero = 0, *count = exits_total.lookup(&key);
    if (!count && exporter_key_added(exits_total.insert(&key, &zero), EXPORTER_MAP(exits_total)))
        count = exits_total.lookup(&key);
    exporter_add(count, 1, EXPORTER_MAP(exits_total));
    return 0;
}
