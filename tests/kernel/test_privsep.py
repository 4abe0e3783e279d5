"""Privilege separation: the serving process holds fds and no capabilities; a privileged
spawner compiles; each dies as it should."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from exporter import capabilities

from ..conftest import alive, bpftool_show, status, still_loaded
from .test_reload import reload, write

CAP_NET_BIND_SERVICE = 1 << 10


def caps_of_every_thread(pid: int) -> set[tuple[int, int, int]]:
    """{(CapEff, CapPrm, CapBnd)} over the threads of `pid`: one element if they agree."""
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        s = status(pid, task)
        found.add((int(s["CapEff"], 16), int(s["CapPrm"], 16), int(s["CapBnd"], 16)))
    return found


def spawner_pid(exporter) -> int:  # type: ignore[no-untyped-def]
    match = re.search(r"started by the spawner \(pid (\d+)\)", exporter.log())
    assert match, exporter.log()
    return int(match[1])


def test_server_has_no_capabilities_spawner_has_ours_and_scrapes_work(daemon, tmp_path):
    write(tmp_path, "calls", "getppid")
    exporter = daemon(f"--config.dir={tmp_path}", "--bpf.stats")
    assert caps_of_every_thread(exporter.proc.pid) == {(0, 0, 0)}
    assert status(exporter.proc.pid)["NoNewPrivs"] == "1"
    assert "this process keeps no capabilities" in exporter.log()

    spawner = spawner_pid(exporter)
    mine = status("self")
    assert status(spawner)["PPid"] == str(exporter.proc.pid)
    assert status(spawner)["CapEff"] == mine["CapEff"]
    assert status(spawner)["CapPrm"] == mine["CapPrm"]
    assert b"exporter.privsep" in Path(f"/proc/{spawner}/cmdline").read_bytes()
    rss_kb = int(status(spawner)["VmRSS"].split()[0])
    assert rss_kb < 30_000, "the spawner imports only the standard library (~15 MB)"

    # Map reads (batch lookups) and program stats (BPF_OBJ_GET_INFO_BY_FD) through held fds.
    for _ in range(23):
        os.getppid()
    assert exporter.value("bcc_calls_calls_total", slot="0") == 23
    runs = [
        value
        for (name, labels), value in exporter.scrape().items()
        if name == "bcc_exporter_program_run_count_total" and dict(labels)["program"] == "calls"
    ]
    assert runs and runs[0] >= 23


def test_sighup_reload_compiles_through_the_spawner(daemon, tmp_path):
    write(tmp_path, "first", "getppid")
    exporter = daemon(f"--config.dir={tmp_path}")
    write(tmp_path, "second", "getuid")
    assert reload(exporter) == 1
    added = exporter.program_ids("second")
    assert added and added <= {prog["id"] for prog in bpftool_show("prog")}
    for _ in range(23):
        os.getuid()
    assert exporter.value("bcc_second_calls_total", slot="0") == 23
    assert caps_of_every_thread(exporter.proc.pid) == {(0, 0, 0)}  # the reload thread too


def test_without_the_spawner_reloads_fail_clearly_and_serving_goes_on(daemon, tmp_path):
    write(tmp_path, "kept", "getppid")
    exporter = daemon(f"--config.dir={tmp_path}")
    os.kill(spawner_pid(exporter), signal.SIGKILL)
    gone = "the privileged spawner that compiles programs is gone (killed by SIGKILL)"
    deadline = time.monotonic() + 5
    while gone not in exporter.log():  # logged when it dies, not only at the next reload
        assert time.monotonic() < deadline, exporter.log()
        time.sleep(0.05)

    write(tmp_path, "added", "getuid")
    assert reload(exporter) == 0
    assert f"reload failed, the running programs are unchanged (1 running): {gone}" in (
        exporter.log()
    )
    for _ in range(23):
        os.getppid()
    assert exporter.value("bcc_kept_calls_total", slot="0") == 23
    assert not exporter.program_ids("added")


def test_sigkill_of_the_daemon_takes_the_spawner_and_every_program(daemon, tmp_path):
    write(tmp_path, "calls", "getppid")
    exporter = daemon(f"--config.dir={tmp_path}")
    spawner, ours = spawner_pid(exporter), exporter.program_ids()
    assert ours and ours <= {prog["id"] for prog in bpftool_show("prog")}
    exporter.proc.send_signal(signal.SIGKILL)
    exporter.proc.wait()
    deadline = time.monotonic() + 5
    while alive(spawner):
        assert time.monotonic() < deadline, "the spawner outlived the daemon"
        time.sleep(0.05)
    assert not still_loaded(ours, "prog")


def test_sigterm_stops_the_spawner_with_the_daemon(daemon, tmp_path):
    write(tmp_path, "calls", "getppid")
    exporter = daemon(f"--config.dir={tmp_path}")
    spawner, ours = spawner_pid(exporter), exporter.program_ids()
    assert exporter.stop() == 0
    assert not alive(spawner)
    assert "spawner that compiles programs is gone" not in exporter.log()  # no false alarm
    assert not still_loaded(ours, "prog")


def test_capabilities_keep_keeps_exactly_those(daemon, tmp_path):
    write(tmp_path, "calls", "getppid")
    exporter = daemon(f"--config.dir={tmp_path}", "--capabilities.keep=CAP_NET_BIND_SERVICE")
    assert caps_of_every_thread(exporter.proc.pid) == {
        (CAP_NET_BIND_SERVICE, CAP_NET_BIND_SERVICE, CAP_NET_BIND_SERVICE)
    }
    assert "this process keeps CAP_NET_BIND_SERVICE" in exporter.log()


def test_no_privilege_separation_keeps_every_capability(daemon, tmp_path):
    write(tmp_path, "calls", "getppid")
    exporter = daemon(f"--config.dir={tmp_path}", "--no-privilege-separation")
    mine = status("self")
    assert status(exporter.proc.pid)["CapEff"] == mine["CapEff"]
    assert status(exporter.proc.pid)["NoNewPrivs"] == "0"
    assert "spawner" not in exporter.log()
    write(tmp_path, "second", "getuid")
    assert reload(exporter) == 1


def test_kernel_symbols_resolve_without_cap_syslog(daemon, write_config):
    """kaddrs (read at each load, in the server) and ksym labels need kallsyms' addresses,
    which the kernel shows only to openers with CAP_SYSLOG: read through an fd opened before
    the capabilities went."""
    config = write_config(  # ebpf_exporter v1's format: the one with kaddrs
        "ksym",
        f"""
programs:
  - name: kaddr
    metrics:
      counters:
        - name: kaddr_calls_total
          help: getppid calls, keyed by vfs_read's address (v1's ksym names exact addresses)
          table: counts
          labels:
            - {{name: function, size: 8, decoders: [{{name: ksym}}]}}
    tracepoints:
      syscalls:sys_enter_getppid: count_getppid
    kaddrs: [vfs_read]
    cflags: ["-DTARGET_TGID={os.getpid()}"]
    code: |
      BPF_HASH(counts, u64);
      int count_getppid(struct tracepoint__syscalls__sys_enter_getppid *args) {{
          if (bpf_get_current_pid_tgid() >> 32 != TARGET_TGID)
              return 0;
          counts.increment((u64) kaddr_vfs_read);
          return 0;
      }}
""",
    )
    exporter = daemon(f"--config.file={config}")
    assert caps_of_every_thread(exporter.proc.pid) == {(0, 0, 0)}
    for _ in range(23):
        os.getppid()
    assert exporter.value("ebpf_exporter_kaddr_calls_total", function="vfs_read") == 23
    assert "shows every address as 0" not in exporter.log()


def test_capability_mask_matches_proc():
    assert capabilities.mask(capabilities.parse("CAP_NET_BIND_SERVICE")) == CAP_NET_BIND_SERVICE
    effective, permitted = capabilities.current()
    assert capabilities.mask(effective) == int(status("self")["CapEff"], 16)
    assert capabilities.mask(permitted) == int(status("self")["CapPrm"], 16)
