"""The churn of a busy node (tests/kernel/churn.c), fast: short-lived processes each with a
comm of its own, cgroups made and removed."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

SOURCE = Path(__file__).with_name("churn.c")


class Churn:
    def __init__(self, directory: Path) -> None:
        gcc = shutil.which("gcc")
        assert gcc, "gcc is needed to build tests/kernel/churn.c"
        self.binary = directory / "churn"
        subprocess.run([gcc, "-O2", "-Wall", "-o", str(self.binary), str(SOURCE)], check=True)

    @staticmethod
    def prefix() -> str:
        """A comm prefix no other process has: 6 bytes, leaving 9 for the process's number."""
        return "bq" + uuid.uuid4().hex[:4]

    def comms(self, prefix: str, count: int, path: Path) -> None:
        """`count` processes named prefix0, prefix1, ..., each opening `path` once."""
        self._run("comms", prefix, str(count), str(path))

    def cgroups(self, directory: Path, count: int, calls: int) -> list[int]:
        """`count` cgroups below `directory`, each made, entered by a process making `calls`
        getppid() calls, and removed; their ids."""
        return [int(line) for line in self._run("cgroups", str(directory), str(count), str(calls))]

    def storm(self, prefix: str, seconds: float, path: Path) -> subprocess.Popen[str]:
        """As comms() for `seconds`, in the background; prints how many processes it made."""
        return subprocess.Popen(
            [str(self.binary), "storm", prefix, str(seconds), str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def _run(self, *args: str) -> list[str]:
        done = subprocess.run(
            [str(self.binary), *args], check=True, timeout=600, capture_output=True, text=True
        )
        return done.stdout.split()
