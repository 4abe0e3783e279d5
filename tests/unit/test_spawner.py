"""The privileged spawner: the server may ask it to reload and to check headers, nothing else;
what it compiles is what the config files on disk say."""

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

from exporter.config import BUILTIN_DIR
from exporter.privsep.client import Spawner
from exporter.privsep.selection import Settings
from exporter.privsep.spawner import Options
from exporter.workers import wire
from exporter.workers.messages import (
    MAX_HAVE,
    CheckHeaders,
    CompileSettings,
    Done,
    Failed,
    Loaded,
    MessageError,
    Refused,
    Reload,
    Selection,
    decode_job,
    decode_request,
    encode_request,
)

SETTINGS = {
    "cflags": ["-DTARGET_TGID=42", "-Dkaddr_vfs_read=0xffffffff816bab70ULL", "-I/usr/include"],
    "probes": [{"function": "f", "attach": ["tracepoint:syscalls:sys_enter_getppid"]}],
    "perf_maps": ["events"],
    "kaddrs": [],
    "reads_kernel_structs": "",
}
COUNTER = """
programs:
  - name: %(name)s
    code: |
      %(code)s
      BPF_ARRAY(calls, u64, 1);
      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { return 0; }
    metrics:
      counters:
        - name: %(name)s_total
          help: calls
          map: calls
          labels: [{name: slot, size: 4, decoders: [{name: uint}]}]
"""


def test_requests_are_a_reload_or_a_header_check():
    for request in (Reload(), Reload(frozenset({"a" * 64})), CheckHeaders()):
        assert decode_request(encode_request(request)) == request


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"{}",
        b'{"jobs": [{"code": "int x;"}]}',
        b'{"reload": {"have": [], "code": "int x;"}}',
        b'{"reload": {"have": ["not a digest"]}}',
        b'{"reload": {"have": [], "config": "/tmp/evil.yaml"}}',
        b'{"check_headers": {"header_fields": [["task_struct", "pid"]]}}',
        b'{"run": ["/bin/sh"]}',
    ],
)
def test_anything_else_is_refused(data: bytes):
    with pytest.raises(MessageError):
        decode_request(data)


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
        "-Irelative",
        "-fno-builtin",
    ],
)
def test_cflags_that_load_code_write_files_or_split_are_refused(flag: str):
    with pytest.raises(MessageError, match="is not allowed"):
        CompileSettings.from_json({**SETTINGS, "cflags": [flag]})


@pytest.mark.parametrize("flag", ["-DX", "-DX=a b", "-UX", "-Wno-unused-value", "-O2", "-g"])
def test_cflags_that_only_define_or_tune_pass(flag: str):
    CompileSettings.from_json({**SETTINGS, "cflags": [flag]})


@pytest.mark.parametrize(
    "job",
    [
        {},
        [],
        {"headers": False},
        {"compile": {"program": "p; x", "code": "", **SETTINGS}},
        {"compile": {"program": "p", "code": 1, **SETTINGS}},
        {"compile": {"program": "p", "code": "", **SETTINGS, "extra": 1}},
        {"compile": {"program": "p", "code": "", **SETTINGS, "perf_maps": ["../x"]}},
        {"cmd": ["/bin/sh"]},
    ],
)
def test_malformed_jobs_are_refused(job: Any):
    with pytest.raises(MessageError):
        decode_job(job)


def write_config(directory: Path, name: str, code: str = "") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(COUNTER % {"name": name, "code": code})
    return path


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "conf"
    directory.mkdir()
    write_config(directory, "ondisk")
    return directory


@pytest.fixture
def spawner(config_dir: Path) -> Iterator[Spawner]:
    settings = Settings(builtin_dir=str(BUILTIN_DIR), config_dir=str(config_dir))
    started = Spawner.start(Options(sys.executable, 20.0, 1, True, settings))
    yield started
    started.close()


def replies(spawner: Spawner, request: Any) -> list[Any]:
    found = []
    for reply, fds in spawner.ask(request):
        wire.close(fds)
        found.append(reply)
    return found


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
    reply, received = wire.receive(ours)
    assert not received
    for pair_ours, _ in pairs:
        pair_ours.close()
    return reply


def test_a_reload_compiles_what_is_on_disk_and_only_what_changed(spawner: Spawner):
    first = replies(spawner, Reload())
    selection = first[0]
    assert isinstance(selection, Selection)
    assert [p.name for p in selection.programs] == ["ondisk"] == list(selection.compiling)
    assert [type(r) for r in first[1:]] == [type(first[1]), Loaded, Done]
    [again] = [r for r in replies(spawner, Reload(frozenset({selection.programs[0].digest})))][:1]
    assert isinstance(again, Selection) and again.compiling == ()


def test_the_spawner_itself_refuses_anything_but_its_requests(spawner: Spawner):
    code = {"jobs": [{"code": '#include "/etc/shadow"', **SETTINGS}]}
    assert "refused" in raw_request(spawner, json.dumps(code).encode())["refused"]["error"]
    assert "refused" in raw_request(spawner, b'{"run": ["/bin/sh"]}')["refused"]["error"]
    assert "refused" in raw_request(spawner, b"not json")["refused"]["error"]
    # Two fds, or none: refused without an answer (EOF on the reply socket).
    assert raw_request(spawner, encode_request(Reload()), fds=2) == {}
    raw_request(spawner, encode_request(Reload()), fds=0)
    # Nested past the parser's recursion limit: refused like any other bad JSON.
    assert "refused" in raw_request(spawner, b"[" * 5000 + b"]" * 5000)["refused"]["error"]
    # And it still serves: a refusal never stops it.
    assert "refused" in raw_request(spawner, b"{}")["refused"]["error"]
    assert spawner.process.poll() is None


def test_a_reload_naming_many_programs_is_answered(spawner: Spawner):
    """A server running hundreds of programs names them all: the request is not cut."""
    have = frozenset(f"{i:064x}" for i in range(MAX_HAVE))
    got = replies(spawner, Reload(have))
    assert isinstance(got[0], Selection) and isinstance(got[-1], Done)


def test_a_failure_inside_the_spawner_is_an_answer_not_silence(spawner: Spawner, config_dir: Path):
    (config_dir / "nul.yaml").write_text('programs: [{name: nul, source: "prog\\0.c"}]')
    [refused] = replies(spawner, Reload())
    assert isinstance(refused, Refused)
    assert refused.error.startswith("the privileged spawner failed: ValueError")
    assert spawner.process.poll() is None


def test_a_config_error_on_disk_is_refused_with_the_file(spawner: Spawner, config_dir: Path):
    (config_dir / "broken.yaml").write_text(
        "programs: [{name: b, code: 'x', cflags: [-fplugin=x]}]"
    )
    [refused] = replies(spawner, Reload())
    assert isinstance(refused, Refused)
    assert refused.error.startswith(f'{config_dir}/broken.yaml: program "b": cflags')


def test_a_program_that_does_not_compile_fails_alone(spawner: Spawner, config_dir: Path):
    write_config(config_dir, "broken", code="this is not C;")
    got = replies(spawner, Reload())
    failed = [r for r in got if isinstance(r, Failed)]
    assert [(f.program, f.stage) for f in failed] == [("broken", "compile")]
    assert [r.program for r in got if isinstance(r, Loaded)] == ["ondisk"]


def test_a_dead_spawner_is_a_clear_error(spawner: Spawner):
    spawner.process.kill()
    spawner.process.wait()
    assert replies(spawner, Reload()) == [
        Refused(
            "the privileged spawner that compiles programs is gone (killed by SIGKILL): no "
            "program can be compiled until the daemon restarts (the running ones keep running)"
        )
    ]


def test_the_spawner_leaves_when_the_server_closes_its_end(spawner: Spawner):
    spawner.sock.close()
    assert spawner.process.wait(timeout=5) == 0


def test_the_spawner_module_stays_light():
    """The spawner lives as long as the daemon: standard library, no config models."""
    code = "import sys, exporter.privsep.spawner; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], check=True, capture_output=True, text=True, cwd="/"
    ).stdout.split()
    assert not [m for m in out if m.startswith(("pydantic", "exporter.loader", "exporter.config"))]
    assert "bcc" not in out and "yaml" not in out


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


def test_the_workers_still_running_die_with_the_server(spawner: Spawner, config_dir: Path):
    fifo = config_dir / "never.h"
    os.mkfifo(fifo)  # nobody opens the other end: the compile waits forever
    (config_dir / "ondisk.yaml").unlink()
    write_config(config_dir, "stuck", code=f'#include "{fifo}"')
    answers = spawner.ask(Reload())
    assert isinstance(next(answers)[0], Selection)
    next(answers)  # the worker took the job
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
