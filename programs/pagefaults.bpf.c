// Page faults by the mode they were taken in (user or kernel) and by access (read, write,
// exec), from x86's exceptions:page_fault_user and page_fault_kernel tracepoints.
//
// A per-CPU array: faults are hot (every first touch of a page), so no hashing and no atomics.
// Slot = mode | access << 8, so that the key's first byte is the mode and its second the
// access, as the two labels read them (x86 is little-endian, and these tracepoints are x86's).
// No comm label: faults are per page, a per-comm hash would cost a hash update per fault.
#define MODE_USER 0
#define MODE_KERNEL 1
#define ACCESS_READ 0
#define ACCESS_WRITE 1
#define ACCESS_EXEC 2

// arch/x86/include/asm/trap_pf.h: the hardware's page fault error code
#define X86_PF_WRITE (1 << 1)
#define X86_PF_INSTR (1 << 4)

BPF_PERCPU_ARRAY(page_faults_total, u64, (ACCESS_EXEC << 8) + MODE_KERNEL + 1);

static __always_inline void count(u32 mode, unsigned long error_code)
{
    u32 access = (error_code & X86_PF_INSTR)   ? ACCESS_EXEC
                 : (error_code & X86_PF_WRITE) ? ACCESS_WRITE
                                               : ACCESS_READ;
    u32 slot = mode | access << 8;
    u64 *faults = page_faults_total.lookup(&slot);
    if (faults)
        (*faults)++;
}

TRACEPOINT_PROBE(exceptions, page_fault_user)
{
    count(MODE_USER, args->error_code);
    return 0;
}

TRACEPOINT_PROBE(exceptions, page_fault_kernel)
{
    count(MODE_KERNEL, args->error_code);
    return 0;
}
