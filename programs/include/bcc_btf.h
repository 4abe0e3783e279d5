// Kernel struct fields at the running kernel's offsets, from its BTF (/sys/kernel/btf), for
// BCC programs whose kernel headers may describe another kernel. A program writes
//
//     u64 acked = BTF_READ(sk, struct tcp_sock, bytes_acked);
//     pid_t ppid = BTF_READ(task, struct task_struct, real_parent->tgid);
//     char parent[16];
//     BTF_READ_INTO(parent, task, struct task_struct, real_parent->comm);
//
// as it would write sk->bytes_acked, task->real_parent->tgid or a bpf_probe_read_kernel() of
// task->real_parent->comm; `.` names a member of a member, `->` follows a pointer. The compile
// worker replaces each spelling, before BCC reads the program, with the macros below and the
// offsets and size BTF gives (exporter/btf/spelling.py), and puts this file before the program.
// A field BTF cannot give (absent, a bitfield) fails the compile with a message naming the
// struct, the field and the kernel. No kernel header is needed for the structs named.
//
// BTF_READ gives the value: integers and enums as s8..s64 or u8..u64 as BTF says (char, bool
// and enums as their size), pointers as void *. Arrays and structs are copied with
// BTF_READ_INTO, into a destination at least as large (checked when compiling).
//
// Each step is one bpf_probe_read_kernel: one for a field, one more per `->`. A read that
// faults (a NULL pointer on the way) gives 0, as bpf_probe_read_kernel zeroes what it cannot
// read.

// The pointer at base + offset.
#define __BTF_PTR(base, offset)                                                              \
    ({                                                                                       \
        u64 __btf_ptr = 0;                                                                   \
        bpf_probe_read_kernel(&__btf_ptr, sizeof(__btf_ptr), (const char *)(base) + (offset)); \
        __btf_ptr;                                                                           \
    })

// The value of `type` at base + offset.
#define __BTF_VALUE(type, base, offset)                                                      \
    ({                                                                                       \
        type __btf_value = 0;                                                                \
        bpf_probe_read_kernel(&__btf_value, sizeof(__btf_value),                             \
                              (const char *)(base) + (offset));                              \
        __btf_value;                                                                         \
    })

// `size` bytes at base + offset, into the lvalue dst; `what` names the field.
#define __BTF_COPY(dst, size, base, offset, what)                                            \
    ({                                                                                       \
        _Static_assert(sizeof(dst) >= (size),                                                \
                       "BTF_READ_INTO: the destination is smaller than " what);              \
        bpf_probe_read_kernel(&(dst), (size), (const char *)(base) + (offset));              \
    })
