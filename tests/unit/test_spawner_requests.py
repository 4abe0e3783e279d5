"""The privileged spawner takes batches of compile jobs of the worker's two shapes and nothing
else."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.loader import handoff
from exporter.privsep import MAX_REQUEST, RequestError, Spawner, check_job, check_jobs

JOB = {
    "code": "int f(void *ctx) { return 0; }",
    "cflags": ["-DTARGET_TGID=42", "-Dkaddr_vfs_read=0xffffffff816bab70ULL", "-I/usr/include"],
    "probes": [{"function": "f", "attach": ["tracepoint:syscalls:sys_enter_getppid"]}],
    "perf_maps": ["events"],
}


def test_a_compile_job_and_a_header_job_pass():
    assert check_job(JOB) == JOB
    header = {"header_fields": [["task_struct", "pid"], ["bio", "bi_iter.bi_sector"]]}
    assert check_job(header) == header
    assert check_jobs([JOB, header, JOB]) == [JOB, header, JOB]


@pytest.mark.parametrize("jobs", [[], JOB, [JOB, {**JOB, "code": 1}]])
def test_a_batch_is_a_non_empty_list_of_jobs(jobs: Any):
    with pytest.raises(RequestError):
        check_jobs(jobs)


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"code": 1},
        {"cflags": "-DX"},
        {"probes": [{"function": "f", "attach": []}]},
        {"probes": [{"function": "f; rm", "attach": ["kprobe:x"]}]},
        {"probes": [{"function": "f", "attach": ["kprobe:x"], "more": 1}]},
        {"perf_maps": ["../x"]},
    ],
)
def test_any_other_shape_is_refused(change: dict[str, Any]):
    with pytest.raises(RequestError):
        check_job({**JOB, **change})


@pytest.mark.parametrize(
    "job",
    [
        {},
        [],
        {"header_fields": [["task_struct", "pid; x"]]},
        {"header_fields": [["task_struct"]]},
        {"header_fields": [["task_struct", "pid"]], "code": ""},
        {"cmd": ["/bin/sh"]},
    ],
)
def test_malformed_jobs_are_refused(job: Any):
    with pytest.raises(RequestError):
        check_job(job)


@pytest.mark.parametrize(
    "flag",
    [
        "-fplugin=/tmp/evil.so",
        "-Xclang",
        "-load",
        "-mllvm",
        "-MF/etc/passwd",
        "-o/tmp/x",
        "-Wp,-MD,/tmp/x",
        "-D",
        "X=1",
        "--config=/tmp/x",
    ],
)
def test_cflags_that_load_code_write_files_or_split_are_refused(flag: str):
    with pytest.raises(RequestError, match="is not allowed"):
        check_job({**JOB, "cflags": [flag]})


@pytest.mark.parametrize("flag", ["-DX", "-DX=a b", "-UX", "-Wno-unused-value", "-O2", "-g"])
def test_cflags_that_only_define_or_tune_pass(flag: str):
    check_job({**JOB, "cflags": [flag]})


@pytest.fixture
def spawner() -> Iterator[Spawner]:
    started = Spawner.start(sys.executable, timeout=10)
    yield started
    started.close()


def raw_request(spawner: Spawner, data: bytes, fds: int = 1) -> dict[str, Any]:
    """Send `data` with `fds` reply sockets as a request; the spawner's answer ({} if none)."""
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(fds)]
    socket.send_fds(spawner.sock, [data], [theirs.fileno() for _, theirs in pairs])
    for _, theirs in pairs:
        theirs.close()
    if not pairs:
        return {}
    ours = pairs[0][0]
    ours.settimeout(10)
    reply, received = handoff.receive(ours)
    assert not received
    for pair_ours, _ in pairs:
        pair_ours.close()
    return reply


def test_the_spawner_itself_refuses_what_the_server_would_not_send(spawner: Spawner):
    evil = {**JOB, "cflags": ["-fplugin=/tmp/evil.so"]}
    reply = raw_request(spawner, json.dumps({"jobs": [JOB, evil]}).encode())
    assert (
        "the privileged spawner refused the job: jobs[1]: cflags: '-fplugin=/tmp/evil.so'"
        in (reply["error"])
    )
    assert "refused" in raw_request(spawner, json.dumps({"job": JOB}).encode())["error"]
    assert "refused" in raw_request(spawner, b'{"run": ["/bin/sh"]}')["error"]
    assert "refused" in raw_request(spawner, b"not json")["error"]
    # Two fds, or none: refused without an answer (EOF on the reply socket).
    assert raw_request(spawner, json.dumps({"jobs": [JOB]}).encode(), fds=2) == {}
    raw_request(spawner, json.dumps({"jobs": [JOB]}).encode(), fds=0)
    # And it still serves: a refusal never stops it.
    assert "refused" in raw_request(spawner, b"{}")["error"]
    assert spawner.process.poll() is None


def test_the_server_side_refuses_before_sending(spawner: Spawner):
    [(reply, fds)] = spawner.run([{**JOB, "cflags": ["-fplugin=x.so"]}, JOB])
    assert reply["error"].startswith("not a job the privileged spawner takes: cflags")
    assert fds == []


def test_a_batch_too_large_for_one_request_is_cut_before_the_job_that_does_not_fit(
    spawner: Spawner,
):
    """The request takes what fits; the answers stop there (no error: the caller sends the
    rest in another request). A job that fits in none is refused."""
    big = {**JOB, "code": "not C " * (MAX_REQUEST // 12)}
    replies = list(spawner.run([big, big]))
    # The first job's start (with its stderr) and its compile error; nothing of the second.
    assert [sorted(reply["meta"]) for reply, _ in replies] == [
        ["compiling", "fd_count"],
        ["error", "fd_count", "ok", "stage"],
    ]
    assert replies[1][0]["meta"]["stage"] == "compile"
    for _, fds in replies:
        for fd in fds:
            os.close(fd)
    huge = {**JOB, "code": "x" * MAX_REQUEST}
    size = len(json.dumps({"jobs": [huge]}))
    assert list(spawner.run([huge])) == [
        ({"error": f"job of {size} bytes: over {MAX_REQUEST}"}, [])
    ]


def test_a_dead_spawner_is_a_clear_error(spawner: Spawner):
    spawner.process.kill()
    spawner.process.wait()
    [(reply, fds)] = spawner.run([JOB])
    assert reply == {
        "error": "the privileged spawner that compiles programs is gone (killed by SIGKILL): no "
        "program can be compiled until the daemon restarts (the running ones keep running)"
    }
    assert fds == []


def test_the_spawner_leaves_when_the_server_closes_its_end(spawner: Spawner):
    spawner.sock.close()
    assert spawner.process.wait(timeout=5) == 0


def test_the_spawner_module_stays_light():
    """The spawner lives as long as the daemon: standard library, no config models."""
    code = "import sys, exporter.privsep; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert not [m for m in out if m.startswith(("pydantic", "exporter.loader", "exporter.config"))]
    assert "bcc" not in out


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_the_workers_still_running_die_with_the_server(spawner: Spawner, tmp_path: Path):
    fifo = tmp_path / "never.h"
    os.mkfifo(fifo)  # nobody opens the other end: the compile waits forever
    answers = spawner.run([{**JOB, "code": f'#include "{fifo}"\n'}])
    reply, fds = next(answers)  # the worker took the job: its stderr comes first
    assert reply["meta"] == {"compiling": 0, "fd_count": 1}
    os.close(fds[0])
    [worker] = children(spawner.pid)
    spawner.sock.close()
    assert spawner.process.wait(timeout=5) == 0
    deadline = time.monotonic() + 5
    while Path(f"/proc/{worker}").exists() and "Z" not in status_of(worker):
        assert time.monotonic() < deadline, "the worker outlived the spawner"
        time.sleep(0.05)
    answers.close()


def status_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
