"""How every child interpreter of the daemon starts: isolated, from /, with our package only.

`python -I -m exporter.<module>` from cwd /: -I ignores PYTHON* variables and the user's
site-packages and puts neither the cwd nor a script's directory on sys.path, so the package
comes from the interpreter's own site-packages (the install), never from whatever directory
the daemon was started in. cwd / also keeps a relative path in a child from meaning the
caller's directory.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import IO

# Variables a child never needs and that change what an interpreter or libc loads.
_DROPPED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "LD_PRELOAD")


def command(python: str, module: str, *args: str) -> list[str]:
    return [python, "-I", "-m", module, *args]


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _DROPPED}


def start(
    python: str,
    module: str,
    args: Sequence[str],
    pass_fds: Sequence[int],
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command(python, module, *args),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        pass_fds=tuple(pass_fds),
        cwd="/",
        env=environment(),
    )
