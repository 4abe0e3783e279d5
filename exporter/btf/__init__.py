"""Kernel struct fields at the offsets of the running kernel's BTF, for BCC programs.

BCC compiles `task->real_parent->tgid` against kernel headers, which on many nodes describe
another kernel: the read compiles and returns the wrong bytes. A program that spells the read
`BTF_READ(task, struct task_struct, real_parent->tgid)` (programs/include/bcc_btf.h) gets the
offsets and sizes from /sys/kernel/btf instead, filled in by its compile worker before BCC
sees the code:

- kernel.py: the running kernel's BTF, vmlinux and the modules' split BTF, loaded on demand;
- fields.py: a member path resolved to the reads that reach it (offsets, size, kind);
- cache.py: resolved fields kept per kernel build, so a start need not parse ~6 MB of BTF;
- spelling.py: finds the spellings in a program's C and writes them out with the constants.

All of it runs in the compile worker (root), never in the server.
"""
