"""The privilege boundary, tried as an attacker would (docs/security.md, threat model).

- Another local user plants an `exporter` package where an admin runs a command: it never runs.
- The serving process is an unprivileged user: a process in its exact credential state cannot
  write root's files or core_pattern, signal root's processes, or get the spawner to compile
  anything but the configs on disk.
- A config in a directory another user can write is refused, however the files are swapped.
- A SIGHUP during start-up does not kill the daemon.
- `--config.check` and serving give the same verdict on every rule the privileged side keeps.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from exporter.config import BUILTIN_DIR
from exporter.privsep import selection

from ..conftest import Daemon, free_port, getppid_counter, status

NOBODY = 65534
BCC_EXPORTER = str(Path(sys.executable).parent / "bcc_exporter")
PLANTED = (
    "exporter/__init__.py",
    "exporter/__main__.py",
    "exporter/privsep/__init__.py",
    "exporter/privsep/__main__.py",
    "exporter/loader/__init__.py",
    "exporter/loader/__main__.py",
    "exporter/config/__init__.py",
    "exporter/config/worker.py",
    "exporter/workers/__init__.py",
)


def as_nobody() -> None:
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)


def plant(directory: Path, marker: Path) -> None:
    """What another user writes into a shared directory: our package's names, which record
    that they ran."""
    code = (
        f"import os; open({str(marker)!r}, 'a')"
        ".write(__name__ + ' ran as uid %d\\n' % os.getuid())\n"
    )
    script = (
        "import os, sys\n"
        "for rel in sys.argv[2:]:\n"
        "    path = os.path.join(sys.argv[1], rel)\n"
        "    os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        f"    open(path, 'w').write({code!r})\n"
    )
    subprocess.run(
        ["/usr/bin/python3", "-c", script, str(directory), *PLANTED],
        preexec_fn=as_nobody,
        check=True,
    )


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    """A world-writable directory (as /tmp or a shared scratch directory)."""
    tmp_path.chmod(0o755)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    return shared


def config_in(directory: Path, name: str = "good") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(getppid_counter(name))
    return path


def test_a_package_planted_in_the_working_directory_never_runs(shared_dir: Path, tmp_path: Path):
    marker = shared_dir / "ran.txt"
    plant(shared_dir, marker)
    # The plant works where Python looks in the cwd (what `python -m exporter.privsep`, the
    # spawner's command before, did from an admin's shell):
    subprocess.run([sys.executable, "-m", "exporter.privsep"], cwd=shared_dir, capture_output=True)
    assert "exporter ran as uid 0" in marker.read_text()
    marker.unlink()

    conf = tmp_path / "conf"
    conf.mkdir()
    config = config_in(conf)
    flags = ["--config.file", str(config)]
    for command in (
        ["--config.check", *flags],
        ["list", *flags],
        ["snapshot", "good", "--duration", "0.2s", *flags],
        ["--no-privilege-separation", "--config.check", *flags],
    ):
        done = subprocess.run(
            [BCC_EXPORTER, *command], cwd=shared_dir, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert not marker.exists(), (command, marker.read_text())
    port = free_port()
    with (tmp_path / "daemon.log").open("wb") as log:
        served = subprocess.Popen(
            [BCC_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", *flags],
            cwd=shared_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(served, port)
        served.send_signal(signal.SIGHUP)  # a reload runs the spawner's workers again
        wait_for_log(tmp_path / "daemon.log", "reload: 1 unchanged")
    finally:
        served.send_signal(signal.SIGTERM)
        assert served.wait(timeout=20) == 0
    assert not marker.exists(), marker.read_text()


def wait_until_serving(process: subprocess.Popen[bytes], port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("not serving")


def wait_for_log(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, path.read_text(errors="replace")
        time.sleep(0.1)


def test_the_serving_process_is_an_unprivileged_user(daemon, tmp_path: Path):
    exporter = daemon(f"--config.file={config_in(tmp_path)}")
    for pid_task in os.listdir(f"/proc/{exporter.proc.pid}/task"):
        s = status(exporter.proc.pid, pid_task)
        assert s["Uid"].split() == [str(NOBODY)] * 4
        assert s["Gid"].split() == [str(NOBODY)] * 4
        assert s["Groups"].strip() == ""
        assert int(s["CapEff"], 16) == int(s["CapPrm"], 16) == 0
        assert int(s["CapBnd"], 16) == int(s["CapAmb"], 16) == 0
        assert s["NoNewPrivs"] == "1"
    for _ in range(23):
        os.getppid()
    assert exporter.value("bcc_getppid_calls_total", slot="0") >= 23


# Run as root in a fresh interpreter: start a spawner as the daemon does, take the serving
# process's exact credentials the way it does (exporter.privsep.drop), then try what an
# attacker who runs code in the server would try. Prints one JSON object.
ATTACKER = textwrap.dedent(
    """
    import ctypes, fcntl, json, os, socket, struct, sys
    from exporter import kallsyms
    from exporter.privsep import drop, selection
    from exporter.privsep.client import Spawner
    from exporter.privsep.spawner import Options
    from exporter.workers import wire
    from exporter.workers.messages import Loaded, Reload, Selection, encode_request

    conf, root_file, victim, builtin = sys.argv[1:5]
    settings = selection.Settings(builtin_dir=builtin, config_dir=conf)
    spawner = Spawner.start(Options(sys.executable, 60.0, 1, True, settings))
    kallsyms.hold()
    drop.drop(drop.Identity.lookup("nobody", "nogroup"), frozenset())
    found = {"status": {}}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        found["status"][key] = value.strip()

    libc = ctypes.CDLL(None, use_errno=True)

    def bpf(cmd, attr):
        if libc.syscall(321, cmd, attr, len(attr)) < 0:
            return os.strerror(ctypes.get_errno())
        return "done"

    def attempt(name, action):
        try:
            action()
            found[name] = "done"
        except OSError as err:
            found[name] = type(err).__name__

    attempt("write_root_file", lambda: open(root_file, "a").write("pwned"))
    core_pattern = "/proc/sys/kernel/core_pattern"
    attempt("write_core_pattern", lambda: open(core_pattern, "w").write("|/tmp/x"))
    attempt("signal_root", lambda: os.kill(int(victim), 0))
    code = os.path.join(os.path.dirname(selection.__file__), "..", "loader", "__main__.py")
    attempt("rewrite_worker_code", lambda: open(code, "a").write("pwned"))
    # TIOCSTI: type into whatever terminal this process has (seccomp says no before the tty).
    attempt("tiocsti", lambda: fcntl.ioctl(1, 0x5412, b"x"))

    # Anything but a reload or a header check is refused; a reload compiles the disk's config.
    answers = []
    for data in (
        json.dumps({"jobs": [{"code": "#include \\"/etc/shadow\\""}]}).encode(),
        json.dumps({"reload": {"have": [], "code": "int x;"}}).encode(),
        json.dumps({"reload": {"have": [], "config_dir": "/tmp"}}).encode(),
    ):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        socket.send_fds(spawner.sock, [data], [theirs.fileno()])
        theirs.close()
        ours.settimeout(30)
        answers.append(wire.receive(ours)[0])
    found["raw"] = answers
    compiled = []
    for reply, fds in spawner.ask(Reload()):
        if isinstance(reply, Selection):
            found["selection"] = [p.name for p in reply.programs]
        if isinstance(reply, Loaded):
            compiled.append(reply.program)
            # With the fds it holds: run a program with a context of its choosing (a
            # raw-tracepoint program following a pointer argument would read any kernel
            # memory), or write a map. bpf(2) answers EPERM to both (seccomp).
            prog = fds[reply.meta["functions"][0]["fd"]]
            amap = fds[reply.meta["maps"][0]["fd"]]
            attr = ctypes.create_string_buffer(struct.pack("=II", prog, 0) + bytes(72))
            found["prog_test_run"] = bpf(10, attr)
            attr = ctypes.create_string_buffer(struct.pack("=I", amap) + bytes(76))
            found["map_update"] = bpf(2, attr)
        wire.close(fds)
    found["compiled"] = compiled
    spawner.close()
    print(json.dumps(found))
    """
)


def test_a_process_in_the_servers_credential_state_cannot_escalate(tmp_path: Path):
    tmp_path.chmod(0o755)
    conf = tmp_path / "conf"
    conf.mkdir()
    config_in(conf, "ondisk")
    root_file = tmp_path / "root-owned"
    root_file.write_text("root's\n")
    root_file.chmod(0o644)
    victim = subprocess.Popen(["sleep", "60"])
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-c",
                ATTACKER,
                str(conf),
                str(root_file),
                str(victim.pid),
                str(BUILTIN_DIR),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
    finally:
        victim.kill()
        victim.wait()
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    state = found["status"]
    assert state["Uid"].split() == [str(NOBODY)] * 4 and state["Gid"].split() == [str(NOBODY)] * 4
    assert state["Groups"] == "" and state["NoNewPrivs"] == "1"
    assert int(state["CapEff"], 16) == int(state["CapPrm"], 16) == int(state["CapBnd"], 16) == 0
    assert found["write_root_file"] == "PermissionError"
    assert found["write_core_pattern"] == "PermissionError"
    assert found["signal_root"] == "PermissionError"
    assert found["rewrite_worker_code"] == "PermissionError"
    assert found["tiocsti"] == "PermissionError"
    assert state["Seccomp"] == "2"
    assert found["prog_test_run"] == found["map_update"] == os.strerror(errno.EPERM)
    assert root_file.read_text() == "root's\n"
    for answer in found["raw"]:
        assert "the privileged spawner refused the request" in answer["refused"]["error"]
    assert found["selection"] == ["ondisk"] and found["compiled"] == ["ondisk"]


def test_a_config_in_a_directory_others_can_write_is_refused_naming_it(tmp_path: Path):
    tmp_path.chmod(0o755)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    config = config_in(open_dir)
    open_dir.chmod(0o777)
    done = subprocess.run(
        [BCC_EXPORTER, "--config.check", f"--config.file={config}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"bcc_exporter: {config}: refusing it: directory {open_dir} is writable by others "
        "(mode 0777); fix it (chmod go-w / chown) or pass --config.allow-insecure-permissions"
    )


RENAME_EXCHANGE = 2
SWAPPER = textwrap.dedent(
    """
    import ctypes, os, sys, time
    os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
    libc = ctypes.CDLL(None, use_errno=True)
    a, b = sys.argv[1].encode(), sys.argv[2].encode()
    deadline = time.monotonic() + float(sys.argv[3])
    swaps = 0
    while time.monotonic() < deadline:
        if libc.renameat2(-100, a, -100, b, 2) != 0:
            raise SystemExit("renameat2: " + os.strerror(ctypes.get_errno()))
        swaps += 1
    print(swaps)
    """
)


def test_a_config_swapped_by_another_user_is_refused_every_time(tmp_path: Path):
    """The attack: root's good config beside the other user's own, in a directory that user
    owns, exchanged (renameat2 RENAME_EXCHANGE) while the spawner reads. Refused 40 of 40."""
    tmp_path.chmod(0o755)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    good = config_in(theirs, "good")
    evil = theirs / "evil.yaml"
    evil.write_text(getppid_counter("good", metric="evil_total"))
    os.chown(evil, NOBODY, NOBODY)
    os.chown(theirs, NOBODY, NOBODY)
    settings = selection.Settings(builtin_dir=str(BUILTIN_DIR), files=(str(good),))
    swapper = subprocess.Popen(
        [sys.executable, "-I", "-c", SWAPPER, str(good), str(evil), "60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        outcomes = []
        for _ in range(40):
            try:
                outcomes.append(selection.read(settings, sys.executable))
            except selection.SelectionError as err:
                outcomes.append(str(err))
    finally:
        swapper.kill()
        swapper.wait()
    assert all(isinstance(o, str) for o in outcomes), "a read got through"
    for outcome in outcomes:
        assert f"is owned by uid {NOBODY}, neither root nor this daemon's user" in outcome


def catches(pid: int, number: int) -> bool:
    return bool(int(status(pid)["SigCgt"], 16) >> (number - 1) & 1)


def gated_config(directory: Path) -> tuple[Path, Path]:
    """The getppid counter, its compile held on a FIFO it includes until the test opens the
    FIFO's other end: a start-up that lasts as long as the test needs, on any machine."""
    gate = directory / "gate.h"
    os.mkfifo(gate)
    path = directory / "good.yaml"
    path.write_text(
        getppid_counter("good").replace("code: |\n", f'code: |\n      #include "{gate}"\n')
    )
    return path, gate


@contextmanager
def gate_opened(gate: Path) -> Iterator[None]:
    """Let the compile go on while in the block: each time the compiler opens the FIFO (once
    per clang pass) it gets an empty header."""
    done = threading.Event()

    def feed() -> None:
        while not done.is_set():
            # ENXIO: the compiler has not opened it (again) yet.
            with contextlib.suppress(OSError):
                os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.01)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield
    finally:
        done.set()
        feeder.join()


@pytest.mark.parametrize("after", [0.1, 0.3, 0.6])
def test_a_sighup_during_start_up_is_queued_not_fatal(after: float, tmp_path: Path):
    """Counted from the entry point's first line: before it, the interpreter itself starts
    (20-50 ms here when quiet, 250 ms on a loaded machine), and no code of ours can run."""
    config, gate = gated_config(tmp_path)
    d = Daemon([f"--config.file={config}"], tmp_path / "daemon.log", wait=False)
    try:
        deadline = time.monotonic() + 10
        while not catches(d.proc.pid, signal.SIGHUP):
            assert time.monotonic() < deadline and d.proc.poll() is None
            time.sleep(0.005)
        assert catches(d.proc.pid, signal.SIGTERM)
        time.sleep(after)
        assert "programs running" not in d.log(), "start-up was over: the test proves nothing"
        d.proc.send_signal(signal.SIGHUP)
        with gate_opened(gate):
            d.wait_ready()
            wait_for_log(tmp_path / "daemon.log", "reload: 1 unchanged")
        for _ in range(23):
            os.getppid()
        assert d.value("bcc_getppid_calls_total", slot="0") >= 23
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0


def test_a_sigterm_during_start_up_stops_it_cleanly(tmp_path: Path):
    config, _ = gated_config(tmp_path)  # never opened: the start-up lasts until stopped
    d = Daemon([f"--config.file={config}"], tmp_path / "daemon.log", wait=False)
    deadline = time.monotonic() + 10
    while not catches(d.proc.pid, signal.SIGTERM):
        assert time.monotonic() < deadline and d.proc.poll() is None
        time.sleep(0.005)
    time.sleep(0.3)
    assert "programs running" not in d.log()
    assert d.stop() == 0
    assert "bcc_exporter: stopped by SIGTERM during start-up" in d.log()


# Sends the server its SIGTERM inside the first fork's at-fork hook, once the handler is in, and
# spins there: CPython drops the Stop a handler raises there ("Exception ignored in"), as in a
# soak run when a SIGTERM came while the server forked the child that asks what bpf(2) needs
# (exporter.privsep.drop), the one fork that runs the hooks. That fork holds the stops now.
IN_FORK_HOOK = """
import os, signal, sys
landed = []
def sigterm_in_fork_hook():
    if landed or not callable(signal.getsignal(signal.SIGTERM)):
        return
    landed.append(True)
    print("test: SIGTERM sent inside the at-fork hook", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(10**6):
        pass
os.register_at_fork(after_in_parent=sigterm_in_fork_hook)
from exporter.launch import main
sys.exit(main())
"""


class StoppedInForkHook(Daemon):
    def command(self, args: list[str]) -> list[str]:
        return [sys.executable, "-c", IN_FORK_HOOK, *super().command(args)[3:]]


def test_a_sigterm_dropped_in_a_fork_hook_still_stops_the_start_up(tmp_path: Path):
    config, _ = gated_config(tmp_path)  # never opened: only the stop can end the start-up
    d = StoppedInForkHook([f"--config.file={config}"], tmp_path / "daemon.log", wait=False)
    try:
        assert d.proc.wait(timeout=20) == 0, d.log()
    finally:
        d.stop()
    log = d.log()
    assert "test: SIGTERM sent inside the at-fork hook" in log
    assert "bcc_exporter: stopped by SIGTERM during start-up" in log, log
    assert "Traceback" not in log and "Exception ignored" not in log, log
    # The spawner, if it was started, left with the server.
    pid = str(d.proc.pid).encode()
    deadline = time.monotonic() + 5
    while spawners_of(pid):
        assert time.monotonic() < deadline, spawners_of(pid)
        time.sleep(0.05)


def spawners_of(server: bytes) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"exporter.privsep" in argv and server in argv:
                found.append(proc.name)
    return found


# (what the config says, how its file and directory are set up) -> the one verdict both give
RULES = {
    "cflags that load code": ({"cflags": ["-fplugin=/tmp/x.so"]}, None),
    "cflags outside the allowlist": ({"cflags": ["-fno-builtin"]}, None),
    "relative include directory": ({"cflags": ["-Irelative"]}, None),
    "group-writable config": ({}, ("file", 0o664)),
    "config in a directory others can write": ({}, ("dir", 0o757)),
    "config owned by another user": ({}, ("owner", NOBODY)),
    "include directory others can write": ({"cflags": ["-I{open}"]}, None),
    "a good config": ({}, None),
}


REFUSALS = {
    "cflags that load code": "cflags: '-fplugin=/tmp/x.so' is not allowed",
    "cflags outside the allowlist": "cflags: '-fno-builtin' is not allowed",
    "relative include directory": "cflags: '-Irelative' is not allowed",
    "group-writable config": "is writable by group (mode 0664)",
    "config in a directory others can write": "is writable by others (mode 0757)",
    "config owned by another user": f"is owned by uid {NOBODY}, neither root",
    "include directory others can write": "/open: refusing it: directory",
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_config_check_and_serving_agree_on_every_rule(rule: str, tmp_path: Path):
    change, setup = RULES[rule]
    tmp_path.chmod(0o755)
    directory = tmp_path / "conf"
    directory.mkdir()
    text = getppid_counter("good")
    if change:
        opened = tmp_path / "open"
        opened.mkdir()
        opened.chmod(0o777)
        cflags = [flag.format(open=opened) for flag in change["cflags"]]
        text = text.replace("    code: |", f"    cflags: {json.dumps(cflags)}\n    code: |")
    config = directory / "good.yaml"
    config.write_text(text)
    if setup is not None:
        kind, value = setup
        if kind == "file":
            config.chmod(value)
        elif kind == "dir":
            directory.chmod(value)
        else:
            os.chown(config, value, value)
    check = subprocess.run(
        [BCC_EXPORTER, "--config.check", f"--config.file={config}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    port = free_port()
    served = (
        subprocess.run(
            [BCC_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", f"--config.file={config}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check.returncode
        else None
    )
    if rule == "a good config":
        assert check.returncode == 0 and check.stdout == "OK   good\n", check.stderr
        return
    assert check.returncode == 2, check.stdout + check.stderr
    assert served is not None and served.returncode == 2
    refusal = check.stderr.strip().splitlines()[-1]
    assert refusal.startswith("bcc_exporter: ")
    assert served.stderr.strip().splitlines()[-1] == refusal
    assert REFUSALS[rule] in refusal
    assert stat.S_IMODE(directory.stat().st_mode) in (0o755, 0o757)
