"""The built-in `pagefaults` program: page faults by mode and access, fed by a workload that
touches a known number of fresh pages.

The counter is system-wide (no comm label: a per-comm hash would cost a hash update per fault),
and every process on the machine faults, so the workload's faults are lower bounds of the rise.
perf counts the workload's own faults (perf stat without -a), an independent lower bound of the
same kind. It counts its software event page-faults, not the exceptions:* tracepoints: while a
BPF program that returns 0 is attached to a tracepoint, the kernel hands that tracepoint's
events to no perf event at all (perf_trace_run_bpf_submit), so perf would count 0 there.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys

import pytest

from ..conftest import cannot_run
from . import workload

WRITES, READS, KERNEL_WRITES = 10_007, 3_001, 5_003
NAME = "bcc_page_faults_total"

# Fresh anonymous pages (no transparent huge pages: one fault per 4 KiB page): written by the
# CPU in user mode, read in user mode (maps the zero page), and written by the kernel (read(2)
# of /dev/zero into them faults in kernel mode, in copy_to_user).
TOUCH = f"""
import mmap
PAGE = mmap.PAGESIZE

def fresh(pages):
    m = mmap.mmap(-1, PAGE * pages)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    return m

written = fresh({WRITES})
for i in range({WRITES}):
    written[i * PAGE] = 1
read = fresh({READS})
assert sum(read[i * PAGE] for i in range({READS})) == 0
by_kernel = fresh({KERNEL_WRITES})
fd = os.open("/dev/zero", os.O_RDONLY)
assert os.readv(fd, [by_kernel]) == PAGE * {KERNEL_WRITES}
"""


def faults(samples: dict) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["mode"], dict(labels)["access"]): value
        for (name, labels), value in samples.items()
        if name == NAME
    }


def perf_stat(comm: str) -> int:
    """Run the workload under `perf stat` (its own tasks only); its page faults."""
    code = workload.PRELUDE + TOUCH
    done = subprocess.run(
        ["perf", "stat", "-x,", "-e", "page-faults", "--", sys.executable, "-c", code, comm],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"^(\d+),[^,]*,page-faults,", done.stderr, re.MULTILINE)
    assert found, done.stderr
    return int(found[1])


@pytest.mark.skipif(platform.machine() != "x86_64", reason="exceptions:* are x86 tracepoints")
def test_fresh_pages_fault_by_mode_and_access(daemon):
    exporter = daemon("--config.names=pagefaults")
    before = faults(exporter.scrape())
    theirs = None
    if shutil.which("perf"):
        theirs = perf_stat(workload.unique_comm())
    else:
        workload.run(workload.unique_comm(), TOUCH)
    after = faults(exporter.scrape())
    rise = {key: after[key] - before.get(key, 0) for key in after}
    assert rise[("user", "write")] >= WRITES
    assert rise[("user", "read")] >= READS
    assert rise[("kernel", "write")] >= KERNEL_WRITES
    assert rise[("user", "exec")] >= 1  # a new process runs code it has not mapped yet
    assert set(rise) <= {(m, a) for m in ("user", "kernel") for a in ("read", "write", "exec")}
    if theirs is None:
        cannot_run("no perf (Debian's linux-perf) to compare with")
    # perf counted the workload's own faults; ours are everyone's in a window around them.
    assert theirs >= WRITES + READS + KERNEL_WRITES
    assert sum(rise.values()) >= theirs
