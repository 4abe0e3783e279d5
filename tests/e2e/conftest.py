"""End-to-end tests borrow the kernel tests' fixtures for a loop device and a memory cgroup."""

from ..kernel.test_prog_biolatency import loop_device
from ..kernel.test_prog_oomkill import memory_cgroup

__all__ = ["loop_device", "memory_cgroup"]
