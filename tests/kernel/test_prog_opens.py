"""The built-in `opens` program: open/openat/openat2 by comm and result, counted exactly for a
workload with a unique comm, and equal to bpftrace's count of the same tracepoints."""

from __future__ import annotations

import platform
import re
from collections.abc import Callable

import pytest

from . import workload

NAME = "bcc_opens_total"

# open(2) 5 times, openat(2) 7 times, openat2(2) 11 times: 23 opens that succeed, then 19 of a
# missing file (ENOENT) and 13 of a directory for writing (EISDIR), through raw syscall numbers
# so that each syscall is used for sure (libc's open() is openat(2)). open_tree(2) and
# open_by_handle_at(2) are left out, as opensnoop leaves them out, though the program's wildcard
# probe sees them. Nothing is imported after the prelude has set the comm: an import would open
# files under it.
CALLS = """
libc.syscall.restype = ctypes.c_long
path, missing, directory = (a.encode() for a in sys.argv[2:5])
how = ctypes.create_string_buffer(24)  # struct open_how {flags, mode, resolve} = O_RDONLY
OPEN, OPENAT, OPENAT2, AT_FDCWD = 2, 257, 437, -100
OPEN_TREE, OPEN_BY_HANDLE_AT = 428, 304
calls = (
    (5, OPEN, (path, os.O_RDONLY), 0),
    (7, OPENAT, (AT_FDCWD, path, os.O_RDONLY), 0),
    (11, OPENAT2, (AT_FDCWD, path, how, 24), 0),
    (19, OPENAT, (AT_FDCWD, missing, os.O_RDONLY), 2),  # ENOENT
    (13, OPEN, (directory, os.O_WRONLY), 21),  # EISDIR
    (3, OPEN_TREE, (AT_FDCWD, path, 0), 0),  # not counted
    (2, OPEN_BY_HANDLE_AT, (AT_FDCWD, None, 0), 14),  # EFAULT, not counted
)
for times, nr, args, error in calls:
    for _ in range(times):
        fd = libc.syscall(nr, *args)
        if error:
            assert fd == -1 and ctypes.get_errno() == error, (nr, fd, ctypes.get_errno())
        else:
            assert fd >= 0, (nr, ctypes.get_errno())
            os.close(fd)
"""
EXPECTED = {"ok": 23, "ENOENT": 19, "EISDIR": 13}


def bpftrace_results(comm: str) -> Callable[[], dict[str, int]]:
    """bpftrace counting the same exits for `comm` by return value sign; returns a stopper."""
    script = (
        "tracepoint:syscalls:sys_exit_open,tracepoint:syscalls:sys_exit_openat,"
        f'tracepoint:syscalls:sys_exit_openat2 /comm == "{comm}"/ '
        "{ @[args->ret < 0 ? -args->ret : 0] = count(); }"
    )
    stop = workload.bpftrace(script)

    def finish() -> dict[str, int]:
        out = stop()
        names = {0: "ok", 2: "ENOENT", 21: "EISDIR"}
        return {names[int(m[0])]: int(m[1]) for m in re.findall(r"@\[(\d+)\]: (\d+)", out)}

    return finish


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 syscall numbers")
def test_opens_by_comm_and_result_count_exactly(daemon, tmp_path):
    exporter = daemon("--config.names=opens")
    comm = workload.unique_comm()
    target = tmp_path / "target"
    target.write_text("x")
    theirs = bpftrace_results(comm)
    workload.run(comm, CALLS, str(target), str(tmp_path / "missing"), str(tmp_path))
    ours = {
        dict(labels)["result"]: value
        for (name, labels), value in exporter.scrape().items()
        if name == NAME and dict(labels)["comm"] == comm
    }
    assert ours == EXPECTED
    assert theirs() == EXPECTED
