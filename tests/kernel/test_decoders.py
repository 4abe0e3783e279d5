"""Decoders on real keys: syscall, errno, ksym, majorminor and cgroup labels of real programs.

A workload runs in a child that is started first and held until the program, compiled for the
child's tgid, is attached: the counts are exactly the workload's. Block requests are counted
system-wide (they may be issued from kworkers), so that count is a lower bound.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import remove_cgroup

REPO = Path(__file__).resolve().parents[2]
N = 23  # bcc's rule for tools: a prime number of events, matched exactly


class Child:
    """A Python child that runs `body` once released, so its tgid is known beforehand."""

    def __init__(self, body: str, *args: str) -> None:
        code = "import os, sys, time\nsys.stdin.readline()\n" + textwrap.dedent(body)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid

    def release(self) -> str:
        """Run the body to its end; what it printed."""
        out, err = self.proc.communicate("go\n", timeout=60)
        assert self.proc.returncode == 0, err
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def child() -> Iterator[type[Child]]:
    started: list[Child] = []

    def start(body: str, *args: str) -> Child:
        started.append(Child(body, *args))
        return started[-1]

    yield start  # type: ignore[misc]
    for c in started:
        c.kill()


def series(samples: dict, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def labels_of(samples: dict, name: str, label: str) -> dict[str, float]:
    """{label value: sample value} of a metric with one label."""
    return {dict(labels)[label]: value for labels, value in series(samples, name).items()}


SYSCALLS = """
programs:
  - name: syscall_names
    code: |
      BPF_HASH(calls, u32, u64);
      RAW_TRACEPOINT_PROBE(sys_enter) {
          if (bpf_get_current_pid_tgid() >> 32 != TARGET_TGID)
              return 0;
          u32 nr = ctx->args[1];  // sys_enter(regs, id)
          calls.increment(nr);
          return 0;
      }
    cflags: ["-DTARGET_TGID=%d"]
    metrics:
      counters:
        - name: test_syscalls_total
          help: syscalls of the test child by name.
          map: calls
          labels:
            - {name: syscall, size: 4, decoders: [{name: syscall}]}
        - name: test_syscalls_after_uint_total
          help: the same, through uint.
          map: calls
          labels:
            - {name: syscall, size: 4, decoders: [{name: uint}, {name: syscall}]}
"""


def test_syscall_names(daemon, write_config, child, tmp_path):
    target = tmp_path / "target"
    target.write_text("x")
    workload = child(
        f"""
        for _ in range({N}):
            os.getppid()
        for _ in range({N}):
            os.close(os.open(sys.argv[1], os.O_RDONLY))
        """,
        str(target),
    )
    exporter = daemon(f"--config.file={write_config('syscalls', SYSCALLS % workload.pid)}")
    workload.release()
    samples = exporter.scrape()
    by_name = labels_of(samples, "bcc_test_syscalls_total", "syscall")
    assert by_name["getppid"] == N
    assert by_name["openat"] == N
    assert by_name["close"] >= N
    assert labels_of(samples, "bcc_test_syscalls_after_uint_total", "syscall") == by_name


ERRNOS = """
programs:
  - name: errno_names
    code: |
      BPF_HASH(errors, int, u64);
      TRACEPOINT_PROBE(syscalls, sys_exit_openat) {
          if (bpf_get_current_pid_tgid() >> 32 != TARGET_TGID)
              return 0;
          int ret = args->ret;
          if (ret < 0)
              errors.increment(ret);
          return 0;
      }
    cflags: ["-DTARGET_TGID=%d"]
    metrics:
      counters:
        - name: test_openat_errors_total
          help: failed openat calls of the test child by errno.
          map: errors
          labels:
            - {name: error, size: 4, decoders: [{name: errno}]}
"""


def test_errno_names(daemon, write_config, child, tmp_path):
    workload = child(
        f"""
        for name, flags, times in (("missing", os.O_RDONLY, {N}), (".", os.O_WRONLY, 11)):
            for _ in range(times):
                try:
                    os.open(os.path.join(sys.argv[1], name), flags)
                except OSError:
                    pass
                else:
                    raise AssertionError(name)
        """,
        str(tmp_path),
    )
    exporter = daemon(f"--config.file={write_config('errno', ERRNOS % workload.pid)}")
    workload.release()
    assert labels_of(exporter.scrape(), "bcc_test_openat_errors_total", "error") == {
        "ENOENT": N,
        "EISDIR": 11,
    }


KSYMS = """
programs:
  - name: ksym_names
    code: |
      #include <linux/hrtimer.h>  // the record's enum hrtimer_mode
      BPF_HASH(timers, u64, u64);
      TRACEPOINT_PROBE(timer, hrtimer_start) {
          if (bpf_get_current_pid_tgid() >> 32 != TARGET_TGID)
              return 0;
          u64 function = (u64)args->function;
          timers.increment(function);
          return 0;
      }
    cflags: ["-DTARGET_TGID=%d"]
    metrics:
      counters:
        - name: test_hrtimers_total
          help: hrtimers started by the test child, by callback.
          map: timers
          labels:
            - {name: function, size: 8, decoders: [{name: ksym}]}
        - name: test_hrtimers_by_address_total
          help: the same by address.
          map: timers
          labels:
            - {name: address, size: 8, decoders: [{name: uint}]}
"""


def kallsyms_functions() -> list[tuple[int, str]]:
    out = []
    for line in Path("/proc/kallsyms").read_text().splitlines():
        fields = line.split()
        if fields[1] in "tTwW":
            out.append((int(fields[0], 16), fields[2]))
    return sorted(out)


def test_ksym_names(daemon, write_config, child):
    # nanosleep arms an hrtimer whose callback is hrtimer_wakeup, in the sleeper's context.
    workload = child(
        f"""
        for _ in range({N}):
            time.sleep(0.001)
        """
    )
    exporter = daemon(f"--config.file={write_config('ksym', KSYMS % workload.pid)}")
    workload.release()
    samples = exporter.scrape()
    by_name = labels_of(samples, "bcc_test_hrtimers_total", "function")
    assert by_name["hrtimer_wakeup"] == N
    # Every address, looked up in /proc/kallsyms by the test itself, gives the same names.
    functions = kallsyms_functions()
    assert functions[-1][0] != 0, "kallsyms hides addresses from root here"
    wakeup = next(a for a, name in functions if name == "hrtimer_wakeup")
    by_address = labels_of(samples, "bcc_test_hrtimers_by_address_total", "address")
    assert by_address[str(wakeup)] == N
    looked_up: dict[str, float] = {}
    for address, value in by_address.items():
        name = max((f for f in functions if f[0] <= int(address)), default=(0, "unknown"))[1]
        looked_up[name] = looked_up.get(name, 0) + value
    assert looked_up == by_name


BLOCK = """
programs:
  - name: block_devices
    code: |
      BPF_HASH(requests, u32, u64);
      TRACEPOINT_PROBE(block, block_rq_issue) {
          u32 dev = args->dev;
          requests.increment(dev);
          return 0;
      }
    metrics:
      counters:
        - name: test_block_requests_total
          help: block requests issued, by device number.
          map: requests
          labels:
            - {name: device, size: 4, decoders: [{name: majorminor}]}
        - name: test_block_requests_by_name_total
          help: block requests issued, by device name.
          map: requests
          labels:
            - {name: device, size: 4, decoders: [{name: majorminor, device_name: true}]}
"""


def disks_under(directory: Path) -> tuple[Path, str, set[str]] | None:
    """A file to write below `directory` if its file system is on a block device, with the
    device's major:minor and the whole disks that get its requests (a partition's disk, the
    disks under a device-mapper or md device)."""
    dev = os.stat(directory).st_dev
    number = f"{os.major(dev)}:{os.minor(dev)}"
    if not Path(f"/sys/dev/block/{number}").exists():
        return None
    disks, pending = set(), [Path(f"/sys/dev/block/{number}").resolve()]
    while pending:
        device = pending.pop()
        if (device / "partition").exists():
            device = device.parent
        slaves = sorted((device / "slaves").glob("*")) if (device / "slaves").is_dir() else []
        if slaves:
            pending.extend(s.resolve() for s in slaves)
        else:
            disks.add((device / "dev").read_text().strip())
    return directory / f"bccx-{uuid.uuid4().hex[:8]}", number, disks


def test_majorminor_of_block_requests(daemon, write_config, tmp_path):
    found = disks_under(tmp_path) or disks_under(REPO)
    if found is None:
        pytest.skip(f"neither {tmp_path} nor {REPO} is on a block device")
    path, number, disks = found
    exporter = daemon(f"--config.file={write_config('block', BLOCK)}")
    buffer = mmap.mmap(-1, 4096)  # O_DIRECT wants an aligned buffer
    buffer.write(b"x" * 4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    try:
        for i in range(N):
            os.pwrite(fd, buffer, i * 4096 * 2)
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink()
    # Each metric reads the map in its turn, and other writers' requests (a neighbour's direct
    # I/O) can land between the two reads: so each metric is bounded by the other one in the
    # scrape before and in the scrape after (equal when nothing else writes).
    scrapes = [exporter.scrape(), exporter.scrape()]
    by_number = [labels_of(s, "bcc_test_block_requests_total", "device") for s in scrapes]
    by_name = [labels_of(s, "bcc_test_block_requests_by_name_total", "device") for s in scrapes]
    # Direct writes of N separate blocks: at least N requests on the disks below the file.
    assert sum(by_number[0].get(disk, 0) for disk in disks) >= N, (number, disks, by_number)
    for disk in disks:
        uevent = Path(f"/sys/dev/block/{disk}/uevent").read_text()
        name = dict(line.split("=", 1) for line in uevent.splitlines())["DEVNAME"]
        assert by_number[0][disk] <= by_name[1][name], (disk, name, by_number, by_name)
        assert by_name[0][name] <= by_number[1][disk], (disk, name, by_number, by_name)
    numbers, names = [sum(s.values()) for s in by_number], [sum(s.values()) for s in by_name]
    assert numbers[0] <= names[1] and names[0] <= numbers[1], (numbers, names)


CGROUPS = """
programs:
  - name: cgroup_paths
    code: |
      BPF_HASH(calls, u64, u64);
      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
          if (bpf_get_current_pid_tgid() >> 32 != TARGET_TGID)
              return 0;
          calls.increment(bpf_get_current_cgroup_id());
          return 0;
      }
    cflags: ["-DTARGET_TGID=%d"]
    metrics:
      counters:
        - name: test_getppid_by_cgroup_total
          help: getppid calls of the test child by cgroup.
          map: calls
          labels:
            - {name: cgroup, size: 8, decoders: [{name: cgroup}]}
"""


def cgroup2_mount() -> Path:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    pytest.skip("no cgroup2 file system mounted")


def test_cgroup_paths(daemon, write_config, child):
    # The child moves into a new nested cgroup, then reads where the kernel says it is.
    outer = cgroup2_mount() / f"bccx-{uuid.uuid4().hex[:8]}"
    inner = outer / "inner"
    try:
        inner.mkdir(parents=True)
    except OSError as err:
        pytest.skip(f"cannot make a cgroup here: {err}")
    try:
        workload = child(
            f"""
            for _ in range({N}):
                os.getppid()
            print(open("/proc/self/cgroup").read())
            """
        )
        exporter = daemon(f"--config.file={write_config('cgroup', CGROUPS % workload.pid)}")
        (inner / "cgroup.procs").write_text(str(workload.pid))
        cgroups = workload.release().splitlines()
        path = next(line[3:] for line in cgroups if line.startswith("0::"))
        assert path == f"/{outer.name}/inner"
        assert labels_of(exporter.scrape(), "bcc_test_getppid_by_cgroup_total", "cgroup") == {
            path: N
        }
    finally:
        for directory in (inner, outer):
            remove_cgroup(directory)  # waits for the child's exit to leave it
