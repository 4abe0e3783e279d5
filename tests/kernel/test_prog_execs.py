"""The built-in `execs` program: execs, forks and process exits by class, for a workload with
unique comms whose answer is exact, and equal to bpftrace's view of the same events, whose exit
codes and parents come from task_struct through BTF (exitsnoop-bpfcc reads them through header
structs, which are laid out wrong on this kernel)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from . import workload

# Each name is a copy of a coreutils binary whose comm (its file name) is unique to this test.
# The workload forks and execs them and knows how each one ends.
WORKLOAD = """
import resource, signal, threading, time
true, false, sleep = sys.argv[2:5]

def spawn(path, *args):
    pid = os.fork()
    if pid == 0:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file for the SIGSEGV
        os.execv(path, [path, *args])
    return pid

def wait(pid):
    return os.waitpid(pid, 0)[1]

def kill_after_exec(path, sig):
    pid = spawn(path, "60")
    name = os.path.basename(path)
    while open(f"/proc/{pid}/comm").read().strip() != name:  # exec'd: its comm is the copy's
        time.sleep(0.001)
    os.kill(pid, sig)
    return wait(pid)

for _ in range(23):
    assert wait(spawn(true)) == 0
for _ in range(19):
    assert os.waitstatus_to_exitcode(wait(spawn(false))) == 1
for sig, times in ((signal.SIGTERM, 7), (signal.SIGKILL, 5), (signal.SIGSEGV, 3)):
    for _ in range(times):
        assert os.waitstatus_to_exitcode(kill_after_exec(sleep, sig)) == -sig
threads = [threading.Thread(target=time.sleep, args=(0,)) for _ in range(11)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def copies(directory: Path) -> dict[str, Path]:
    """Copies of true, false and sleep under unique names (unique comms)."""
    out = {}
    for tool in ("true", "false", "sleep"):
        found = shutil.which(tool)
        assert found, tool
        out[tool] = directory / workload.unique_comm()
        shutil.copy(found, out[tool])
    return out


CORE_SIGNALS = {3, 4, 5, 6, 7, 8, 11, 24, 25, 31}


def exit_class(code: int) -> str:
    """The class of a task_struct.exit_code (wait status layout)."""
    sig = code & 0x7F
    if sig == 0:
        return "ok" if code >> 8 == 0 else "error"
    return "core" if sig in CORE_SIGNALS else "signal"


def bpftrace_lifecycle(comms: list[str]) -> Callable[[], dict[str, dict]]:
    """bpftrace counting the same events for `comms`; returns a stopper."""
    only = " || ".join(f'comm == "{c}"' for c in comms)
    script = f"""
        tracepoint:sched:sched_process_exec /{only}/ {{
            @execs[comm] = count();
            @parents[comm, curtask->real_parent->comm] = count();
        }}
        tracepoint:task:task_newtask /{only}/ {{
            @forks[comm, args->clone_flags & 0x10000 ? "thread" : "process"] = count();
        }}
        tracepoint:sched:sched_process_exit /({only}) && pid == tid/ {{
            @exits[comm, curtask->exit_code] = count();
        }}
    """
    stop = workload.bpftrace(script)

    def finish() -> dict[str, dict]:
        out = stop()
        found: dict[str, dict] = {"execs": {}, "parents": {}, "forks": {}, "exits": {}}
        for m in re.finditer(r"@execs\[(\w+)\]: (\d+)", out):
            found["execs"][m[1]] = int(m[2])
        for m in re.finditer(r"@parents\[(\w+), (\w+)\]: (\d+)", out):
            found["parents"][(m[1], m[2])] = int(m[3])
        # bpftrace 0.17 can print one key of @forks many times (seen here: an entry for nearly
        # every event; likely the ternary's string buffer, bytes past its NUL in the key).
        for m in re.finditer(r"@forks\[(\w+), (\w+)\]: (\d+)", out):
            key = (m[1], m[2])
            found["forks"][key] = found["forks"].get(key, 0) + int(m[3])
        for m in re.finditer(r"@exits\[(\w+), (\d+)\]: (\d+)", out):
            key = (m[1], exit_class(int(m[2])))
            found["exits"][key] = found["exits"].get(key, 0) + int(m[3])
        return found

    return finish


def series(samples: dict, name: str, comms: list[str], *keys: str) -> dict:
    out = {}
    for (sample, labels), value in samples.items():
        found = dict(labels)
        if sample == name and found["comm"] in comms:
            key = tuple(found[k] for k in keys)
            out[key[0] if len(key) == 1 else key] = value
    return out


def test_execs_forks_and_exit_classes_count_exactly(daemon, tmp_path):
    exporter = daemon("--config.names=execs")
    tools = copies(tmp_path)
    true, false, sleep = (tools[t].name for t in ("true", "false", "sleep"))
    parent = workload.unique_comm()
    comms = [parent, true, false, sleep]
    theirs = bpftrace_lifecycle(comms)
    workload.run(parent, WORKLOAD, *(str(tools[t]) for t in ("true", "false", "sleep")))
    samples = exporter.scrape()
    ours = {
        "execs": series(samples, "bcc_execs_total", comms, "comm"),
        "parents": series(samples, "bcc_execs_by_parent_total", comms, "comm", "parent_comm"),
        "forks": series(samples, "bcc_forks_total", comms, "comm", "kind"),
        "exits": series(samples, "bcc_process_exits_total", comms, "comm", "class"),
    }
    assert ours == {
        "execs": {true: 23, false: 19, sleep: 15},
        # task->real_parent->comm through BTF: the workload forked every one of them.
        "parents": {(true, parent): 23, (false, parent): 19, (sleep, parent): 15},
        # The parent forked each child; its threads are threads. The children forked nothing.
        "forks": {(parent, "process"): 57, (parent, "thread"): 11},
        "exits": {
            (true, "ok"): 23,
            (false, "error"): 19,
            (sleep, "signal"): 12,  # SIGTERM and SIGKILL
            (sleep, "core"): 3,  # SIGSEGV, core dumps off
            (parent, "ok"): 1,  # the workload itself; its threads are not processes
        },
    }
    assert theirs() == ours
