"""Kernel struct fields through BTF (BTF_READ, exporter/btf) on this machine, whose kernel
headers (Debian 6.1's) lay the structs out otherwise than its 6.18 kernel: the values agree
with the known answer and with bpftrace, which reads the same fields through BTF."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

from . import workload

K = 23  # bcc's rule for tools: a prime number of events, matched exactly
N = 1_000_003  # bytes of the TCP transfer

PPID_PROGRAM = """
programs:
  - name: parents
    code: |
      struct key { char comm[16]; u32 ppid; };
      BPF_HASH(calls, struct key, u64, 1024);
      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
          struct key key = {};
          bpf_get_current_comm(&key.comm, sizeof(key.comm));
          void *task = (void *)bpf_get_current_task();
          key.ppid = BTF_READ(task, struct task_struct, real_parent->tgid);
          u64 zero = 0, *count = calls.lookup_or_try_init(&key, &zero);
          if (count)
              __sync_fetch_and_add(count, 1);
          return 0;
      }
    metrics:
      counters:
        - name: getppid_by_parent_total
          help: getppid calls by comm and the parent's tgid.
          map: calls
          labels:
            - {name: comm, size: 16, decoders: [{name: string}]}
            - {name: ppid, size: 4, decoders: [{name: uint}]}
"""

MISSING_FIELD = """
programs:
  - name: missing
    code: |
      BPF_ARRAY(calls, u64, 1);
      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
          void *task = (void *)bpf_get_current_task();
          u32 zero = 0;
          u64 *count = calls.lookup(&zero);
          if (count)
              *count += BTF_READ(task, struct task_struct, real_parent->no_such_field);
          return 0;
      }
    metrics:
      counters:
        - name: missing_total
          help: never compiles.
          map: calls
          labels:
            - {name: slot, size: 4, decoders: [{name: uint}]}
"""


def test_real_parent_tgid_agrees_with_bpftrace(daemon, write_config):
    exporter = daemon(f"--config.file={write_config('parents', PPID_PROGRAM)}")
    comm = workload.unique_comm()
    stop = workload.bpftrace(
        f'tracepoint:syscalls:sys_enter_getppid /comm == "{comm}"/'
        " { @[curtask->real_parent->tgid] = count(); }"
    )
    printed = workload.run(comm, f"for _ in range({K}): print(os.getppid())")
    theirs = {int(m[1]): int(m[2]) for m in re.finditer(r"@\[(\d+)\]: (\d+)", stop())}
    ours = {
        int(dict(labels)["ppid"]): value
        for (name, labels), value in exporter.scrape().items()
        if name == "bcc_getppid_by_parent_total" and ("comm", comm) in labels
    }
    # The workload's parent is this process; the headers put tgid 1152 bytes away from it.
    assert set(printed.split()) == {str(os.getpid())}
    assert ours == theirs == {os.getpid(): K}


def test_missing_field_fails_its_compile_naming_struct_field_and_kernel(daemon, write_config):
    too_small = MISSING_FIELD.replace("missing", "small").replace(
        "*count += BTF_READ(task, struct task_struct, real_parent->no_such_field);",
        "{ char comm[8]; BTF_READ_INTO(comm, task, struct task_struct, comm); *count += comm[0]; }",
    )
    exporter = daemon(
        f"--config.file={write_config('missing', MISSING_FIELD)}",
        f"--config.file={write_config('small', too_small)}",
    )
    assert exporter.value("bcc_exporter_enabled_programs", program="missing") == 0
    assert exporter.value("bcc_exporter_enabled_programs", program="small") == 0
    # A destination smaller than the field fails in the compiler, naming the field.
    assert re.search(
        r'program "small": compile failed: .*error: static.assert.* "BTF_READ_INTO: the'
        r' destination is smaller than struct task_struct.comm"',
        exporter.log(),
    ), exporter.log()
    assert (
        'program "missing": compile failed: /virtual/main.c:7:19: error: BTF_READ: struct'
        " task_struct, field real_parent->no_such_field: struct task_struct has no member"
        f" no_such_field (BTF of kernel {os.uname().release})"
    ) in exporter.log()


# Both ends of one connection in a process of its own comm: the client sends N bytes and
# shuts its side; the server reads them to the end and shuts its side; the client reads the
# server's FIN. The listener's port is printed first, and the transfer waits for a line on
# stdin, so that bpftrace can watch that port alone. Both sockets stay open until they are in
# TCP_CLOSE, which the kernel reaches in softirq when the last FIN or ACK arrives; so the child
# exits only once both have closed, each after the peer's FIN. A client that closed its socket
# right after sending (as it once did) left it orphaned, and an orphan whose FIN is acknowledged
# before the server's FIN arrives goes straight to a FIN_WAIT2 time-wait socket (tcp_rcv_state_
# process): it reaches TCP_CLOSE before the server's FIN, which only the time-wait socket sees,
# and bytes_received at close missed that FIN whenever the server acknowledged the client's FIN
# before it closed (its delayed ACK fired, or a busy CPU kept it from running).
TRANSFER = """
import socket, time
n = int(sys.argv[2])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print(listener.getsockname()[1], flush=True)
sys.stdin.readline()
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
client.sendall(b"x" * n)
client.shutdown(socket.SHUT_WR)
got = 0
while chunk := server.recv(1 << 16):
    got += len(chunk)
assert got == n, got
server.shutdown(socket.SHUT_WR)
assert client.recv(1) == b""
deadline = time.monotonic() + 10
for sock in client, server:
    while (state := sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]) != 7:  # TCP_CLOSE
        assert time.monotonic() < deadline, f"{sock}: TCP state {state} after 10 s"
        time.sleep(0.001)
client.close()
server.close()
listener.close()
"""

# Raw counters of the sockets on the port at close, as tcplife reads them (through BTF). The
# casts: bpftrace 0.17 compares a u16 argument with a constant above 32767 as never equal.
BYTES_BT = """
tracepoint:sock:inet_sock_set_state
/args->newstate == 7 && args->protocol == 6
 && ((uint64)args->sport == %(port)d || (uint64)args->dport == %(port)d)/
{
    @acked = sum(((struct tcp_sock *)args->skaddr)->bytes_acked);
    @received = sum(((struct tcp_sock *)args->skaddr)->bytes_received);
}
"""


def attached_bpftrace(script: str) -> Callable[[], str]:
    """bpftrace on `script`, returned once its probes are attached (bpftrace 0.17 says
    "Attaching" before it attaches; a loopback transfer is over in milliseconds): a probe on
    this process's getppid(2) says when. The returned function stops it and gives its maps."""
    canary = f'tracepoint:syscalls:sys_enter_getppid /pid == {os.getpid()}/ {{ printf("up\\n"); }}'
    proc = subprocess.Popen(
        ["bpftrace", "-e", script + canary],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        os.getppid()
        if select.select([proc.stdout], [], [], 0.05)[0]:
            line = proc.stdout.readline()
            assert line, "bpftrace exited before it attached"
            if line == "up\n":
                break
    else:
        raise AssertionError("bpftrace did not attach within 60 s")

    def finish() -> str:
        return workload.stop_bpftrace(proc)[0]

    return finish


def test_tcp_bytes_by_comm_are_the_payload_exactly(daemon):
    exporter = daemon("--config.names=tcp")
    comm = workload.unique_comm()
    code = workload.PRELUDE + textwrap.dedent(TRANSFER)
    child = subprocess.Popen(
        [sys.executable, "-c", code, comm, str(N)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    port = int(child.stdout.readline())
    stop = attached_bpftrace(BYTES_BT % {"port": port})
    child.stdin.write("go\n")
    child.stdin.close()
    assert child.wait(timeout=60) == 0

    # The child has exited: both sockets were in TCP_CLOSE, counted by both programs.
    printed = stop()
    theirs = {m[1]: int(m[2]) for m in re.finditer(r"@(\w+): (\d+)", printed)}
    samples = exporter.scrape()
    key = frozenset({("comm", comm)})
    assert samples.get(("bcc_tcp_sent_bytes_total", key)) == N
    assert samples.get(("bcc_tcp_received_bytes_total", key)) == N
    # bpftrace's raw counters count the sequence numbers of the handshake's SYN (the client's)
    # and of both FINs, acknowledged and received; the payload is N.
    assert theirs == {"acked": N + 3, "received": N + 2}, printed
