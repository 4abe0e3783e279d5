"""The built-in readline program (off by default): lines typed into interactive bash shells on
a pseudo-terminal are counted exactly, by the shell's comm; bashreadline sees the same lines."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import REPO, TOOL_EXIT_SECONDS
from . import workload

N = 23  # bcc's rule for tools: a prime number of events, matched exactly
M = 11
BASH = "/bin/bash"
PROMPT = b"bccx-prompt> "
# bashreadline as packaged, with the uprobe binding the exporter's workers use: Debian's
# python3-bpfcc passes libbcc's bpf_attach_uprobe() no ref_ctr_offset, so the kernel takes stack
# garbage for one (exporter.compiler.worker.declare_attach_uprobe) and refuses a second uprobe on
# the same instruction that passes another (dmesg: "ref_ctr_offset mismatch").
WITH_REF_CTR_OFFSET = """
import runpy, sys
from exporter.compiler.worker import declare_attach_uprobe
declare_attach_uprobe()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def type_into_bash(executable: str, lines: list[str], home: Path) -> int:
    """Run bash interactively on a pseudo-terminal, type `lines` one per prompt, then end the
    input (Ctrl-D, which readline returns as NULL). Returns the shell's pid."""
    master, slave = os.openpty()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HISTFILE": str(home / "history"),
        "TERM": "dumb",
        "PS1": PROMPT.decode(),
    }
    shell = subprocess.Popen(
        [executable, "--norc", "--noprofile", "-i"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,  # no controlling terminal: bash says "no job control", fine
    )
    os.close(slave)
    seen = b""
    try:
        for line in [*lines, "\x04"]:
            deadline = time.monotonic() + 30
            while PROMPT not in seen:  # readline is waiting for a line
                assert time.monotonic() < deadline, seen[-500:]
                if select.select([master], [], [], 0.1)[0]:
                    seen += os.read(master, 4096)
            seen = seen.split(PROMPT, 1)[1]
            os.write(master, line.encode() + (b"\n" if line != "\x04" else b""))
        assert shell.wait(timeout=30) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        os.close(master)
    return shell.pid


def test_lines_typed_into_bash(daemon, tmp_path):
    if not Path(BASH).exists():
        pytest.skip(f"no {BASH}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tool = subprocess.Popen(
        [sys.executable, "-c", WITH_REF_CTR_OFFSET, "/usr/sbin/bashreadline-bpfcc"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        exporter = daemon("--config.names=readline")  # compiles while bashreadline does
        assert tool.stdout is not None
        assert "COMMAND" in tool.stdout.readline()  # printed once attached
        before = exporter.value("bcc_bash_readline_lines_total", comm="bash")

        # A shell of a unique comm: bash through a symlink of that name (the comm is the name
        # exec'd, the uprobe is on the file behind it). Its series counts it alone.
        comm = workload.unique_comm()
        link = tmp_path / comm
        link.symlink_to(BASH)
        type_into_bash(str(link), [f"echo {i}" for i in range(N)], tmp_path)
        assert exporter.value("bcc_bash_readline_lines_total", comm=comm) == N

        # bashreadline only shows shells whose comm is "bash": one of those too, M lines.
        pid = type_into_bash(BASH, [f": line {i}" for i in range(M)], tmp_path)
        # Nobody else types into an interactive bash on a test machine: exact.
        after = exporter.value("bcc_bash_readline_lines_total", comm="bash")
        assert after - before == M
    finally:
        time.sleep(0.5)  # let it drain its perf buffer
        tool.send_signal(signal.SIGINT)
        out, err = tool.communicate(timeout=TOOL_EXIT_SECONDS)
    lines = [line.split(None, 2) for line in out.splitlines()]
    assert [words[2] for words in lines if words[1] == str(pid)] == [
        f": line {i}" for i in range(M)
    ]
