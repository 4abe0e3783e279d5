"""The built-in `oomkill` program: a real OOM kill, made safely inside a memory cgroup with a small
limit, counts exactly once under the victim's comm.

The memory controller is taken where this machine has it: cgroup v2 (memory.max) when the
cgroup2 root hands it to its children, else the cgroup v1 memory hierarchy
(memory.limit_in_bytes); without either the test skips and says why.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import remove_cgroup
from . import workload

LIMIT = 64 << 20
CAP = 1 << 30  # the workload stops here if no OOM kill came: a failure, never a runaway


@dataclass
class MemoryCgroup:
    path: Path
    limit_file: str
    procs_file: str

    def oom_kills(self) -> int:
        """The kernel's own count of OOM kills in this cgroup."""
        for name in ("memory.events", "memory.oom_control"):  # v2, v1
            events = self.path / name
            if events.exists():
                for line in events.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        raise AssertionError(f"no oom_kill count under {self.path}")


def mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, type, options) of the cgroup file systems."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, kind, options, *_ = line.split()
        if kind in ("cgroup", "cgroup2"):
            found.append((point, kind, set(options.split(","))))
    return found


def memory_parent() -> tuple[Path, str, str] | str:
    """Where to make a memory-limited cgroup, with its limit and procs files; or why not."""
    reasons = []
    for point, kind, options in mounts():
        root = Path(point)
        if kind == "cgroup2":
            controllers = (root / "cgroup.controllers").read_text().split()
            subtree = (root / "cgroup.subtree_control").read_text().split()
            if "memory" in subtree:
                return root, "memory.max", "cgroup.procs"
            reasons.append(
                f"cgroup2 at {point} does not give its children the memory controller "
                f"(controllers: {' '.join(controllers) or 'none'}; subtree_control: "
                f"{' '.join(subtree) or 'none'})"
            )
        elif "memory" in options:
            return root, "memory.limit_in_bytes", "cgroup.procs"
    reasons.append("no cgroup v1 memory hierarchy mounted")
    return "; ".join(reasons)


@pytest.fixture
def memory_cgroup() -> Iterator[MemoryCgroup]:
    parent = memory_parent()
    if isinstance(parent, str):
        pytest.skip(f"no memory controller to make an OOM kill in: {parent}")
    root, limit_file, procs_file = parent
    path = root / f"bccx-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError as err:
        pytest.skip(f"cannot make a cgroup under {root}: {err}")
    try:
        (path / limit_file).write_text(str(LIMIT))
        swap = path / "memory.swap.max"  # v2; v1's memsw needs no limit without swap
        if swap.exists():
            swap.write_text("0")
        yield MemoryCgroup(path, limit_file, procs_file)
    finally:
        remove_cgroup(path)  # waits for the victim's exit to leave it


# The child moves itself into the cgroup, then fills memory 1 MiB at a time (bytes objects are
# written, so every page is charged) until the OOM killer ends it.
HOG = f"""
with open(sys.argv[2], "w") as procs:
    procs.write(str(os.getpid()))
chunks = []
while len(chunks) < {CAP >> 20}:
    chunks.append(b"\\1" * (1 << 20))
sys.exit(3)
"""


def test_oom_kill_in_a_memory_cgroup_counts_once_under_the_victims_comm(daemon, memory_cgroup):
    exporter = daemon("--config.names=oomkill")
    comm = workload.unique_comm()
    kills_before = memory_cgroup.oom_kills()
    with pytest.raises(subprocess.CalledProcessError) as killed:
        workload.run(comm, HOG, str(memory_cgroup.path / memory_cgroup.procs_file))
    assert killed.value.returncode == -9, killed.value.stderr  # SIGKILL from the OOM killer
    assert memory_cgroup.oom_kills() - kills_before == 1
    ours = {
        dict(labels)["comm"]: value
        for (name, labels), value in exporter.scrape().items()
        if name == "bcc_oom_kills_total"
    }
    assert ours.get(comm) == 1
