"""kill -9 of a compile worker mid-compile costs that one program: the daemon serves the others,
reports it failed, and nothing of it stays loaded in the kernel.

The victim's C code includes a FIFO, so its compile blocks, deterministically, until we open the
FIFO's other end; then its worker (`python -m exporter.compiler`, started by the daemon) is the
process holding the FIFO open, and it gets SIGKILL while clang waits to read the header.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from ..conftest import alive, bpftool_show, getppid_counter

GOOD = getppid_counter(metric="good_calls_total", namespace="fault")

VICTIM = """
programs:
  - name: victim
    namespace: fault
    code: |
      #include "{fifo}"
      BPF_ARRAY(fault_slow_map, u64, 1);
      int fault_slow_fn(void *ctx) {{
          u32 zero = 0;
          fault_slow_map.increment(zero);
          return 0;
      }}
    probes:
      - {{function: fault_slow_fn, attach: "tracepoint:syscalls:sys_enter_getppid"}}
    metrics:
      counters:
        - name: victim_calls_total
          help: getppid calls.
          map: fault_slow_map
          labels:
            - {{name: slot, size: 4, decoders: [{{name: uint}}]}}
"""


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (workers may be started by a helper process of the daemon)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found.extend(frontier)
    return found


def holder_of(path: Path, pids: list[int]) -> int | None:
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == str(path):
                    return pid
            except OSError:
                continue
    return None


def worker_holding(fifo: Path, daemon_pid: int) -> int:
    """The daemon's process that holds the FIFO open (the compile worker), waited for: the
    writer's open() returns while the worker's is still returning."""
    deadline = time.monotonic() + 10
    while (worker := holder_of(fifo, descendants(daemon_pid))) is None:
        assert time.monotonic() < deadline, "no process of the daemon holds the FIFO"
        time.sleep(0.02)
    return worker


def open_writer(fifo: Path, timeout: float) -> int:
    """Our end of the FIFO, once the compiler has opened its end (it blocks until then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:  # ENXIO: no reader yet
            if time.monotonic() > deadline:
                raise AssertionError(f"nobody opened {fifo} in {timeout} s") from err
            time.sleep(0.05)


def loaded(kind: str) -> set[str]:
    return {entry.get("name", "") for entry in bpftool_show(kind)}


def test_sigkill_of_a_compile_worker_costs_only_its_program(daemon, write_config, tmp_path):
    fifo = tmp_path / "slow.h"
    os.mkfifo(fifo)
    exporter = daemon(
        f"--config.file={write_config('good', GOOD)}",
        f"--config.file={write_config('victim', VICTIM.format(fifo=fifo))}",
        wait=False,
    )
    writer = open_writer(fifo, timeout=60)
    try:
        worker = worker_holding(fifo, exporter.proc.pid)
        cmdline = Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
        assert b"exporter.compiler" in cmdline
        assert "fault_slow_fn" not in loaded("prog")  # mid-compile: nothing loaded yet
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        exporter.wait_ready(timeout=60)
    finally:
        os.close(writer)
    # Well before --loader.timeout (120 s): the daemon saw the worker die, it did not time out.
    assert time.monotonic() - killed_at < 60
    assert not Path(f"/proc/{worker}").exists(), "the killed worker was reaped"

    before = exporter.value("fault_good_calls_total", slot="0")
    for _ in range(23):
        os.getppid()
    assert exporter.value("fault_good_calls_total", slot="0") - before >= 23
    assert exporter.value("bcc_exporter_enabled_programs", program="good") == 1
    assert exporter.value("bcc_exporter_enabled_programs", program="victim") == 0
    assert re.search(r'program "victim": .*(died|killed)', exporter.log())
    assert "victim" in exporter.get("/").decode()
    assert "fault_slow_fn" not in loaded("prog")
    assert "fault_slow_map" not in loaded("map")


def test_a_worker_killed_mid_batch_costs_only_the_program_it_was_compiling(
    daemon, write_config, tmp_path
):
    """One worker compiles several programs in turn (--loader.jobs=1: all of them, longest
    first): what it handed over before stays attached, the program it was on fails, and the
    programs after it are compiled by a fresh worker."""
    fifo = tmp_path / "slow.h"
    os.mkfifo(fifo)
    # Two header includes: guessed slower than the victim's one, so compiled before it.
    first = getppid_counter("first", "first_calls_total", "fault").replace(
        "    code: |\n",
        "    code: |\n      #include <linux/types.h>\n      #include <linux/types.h>\n",
    )
    last = getppid_counter("last", "last_calls_total", "fault")
    exporter = daemon(
        "--loader.jobs=1",
        f"--config.file={write_config('first', first)}",
        f"--config.file={write_config('victim', VICTIM.format(fifo=fifo))}",
        f"--config.file={write_config('last', last)}",
        wait=False,
    )
    writer = open_writer(fifo, timeout=60)
    try:
        worker = worker_holding(fifo, exporter.proc.pid)
        deadline = time.monotonic() + 10  # its reply is in; its log line may lag a little
        while 'program "first": ready' not in exporter.log():
            assert time.monotonic() < deadline, "first was not compiled before the victim"
            time.sleep(0.02)
        os.kill(worker, signal.SIGKILL)
        exporter.wait_ready(timeout=60)
    finally:
        os.close(writer)

    log = exporter.log()
    assert re.search(r'program "victim": .*died \(killed by SIGKILL\)', log)
    assert log.index('program "victim": compiling') < log.index('program "last": compiling')
    assert [
        exporter.value("bcc_exporter_enabled_programs", program=p)
        for p in ("first", "victim", "last")
    ] == [1, 0, 1]
    before = [exporter.value(f"fault_{p}_calls_total", slot="0") for p in ("first", "last")]
    for _ in range(23):
        os.getppid()
    after = [exporter.value(f"fault_{p}_calls_total", slot="0") for p in ("first", "last")]
    assert all(a - b >= 23 for a, b in zip(after, before, strict=True))
    assert "fault_slow_fn" not in loaded("prog")


def test_a_worker_hung_mid_batch_costs_only_the_program_it_was_compiling(
    daemon, write_config, tmp_path
):
    """--loader.timeout bounds each program's compile: the worker stuck on one is killed and
    the programs after it go to a fresh worker."""
    fifo = tmp_path / "never.h"
    os.mkfifo(fifo)  # nobody opens the other end: the compile waits forever
    last = getppid_counter("last", "last_calls_total", "fault")
    exporter = daemon(
        "--loader.jobs=1",
        "--loader.timeout=3",
        f"--config.file={write_config('victim', VICTIM.format(fifo=fifo))}",
        f"--config.file={write_config('last', last)}",
    )
    assert 'program "victim": compile worker timed out after 3 s' in exporter.log()
    assert exporter.value("bcc_exporter_enabled_programs", program="victim") == 0
    assert exporter.value("bcc_exporter_enabled_programs", program="last") == 1
    assert holder_of(fifo, descendants(exporter.proc.pid)) is None  # the stuck one was killed


def test_sigkill_of_the_daemon_mid_compile_leaves_no_worker(daemon, write_config, tmp_path):
    """A worker stuck in a compile (here: on an include that never opens) dies with the
    process that started it, so nothing of the daemon outlives a SIGKILL."""
    fifo = tmp_path / "slow.h"
    os.mkfifo(fifo)
    exporter = daemon(
        f"--config.file={write_config('victim', VICTIM.format(fifo=fifo))}", wait=False
    )
    writer = open_writer(fifo, timeout=60)
    try:
        worker = worker_holding(fifo, exporter.proc.pid)
        exporter.proc.kill()
        exporter.proc.wait()
        deadline = time.monotonic() + 10
        while alive(worker):
            assert time.monotonic() < deadline, f"worker {worker} outlived the daemon"
            time.sleep(0.05)
    finally:
        os.close(writer)
