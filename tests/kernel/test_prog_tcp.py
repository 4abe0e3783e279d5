"""The built-in tcp program against TCP workloads with known answers, over IPv6.

The counters are system-wide and other tests (other daemons being scraped) make IPv4 loopback
connections all the time; nothing else here speaks IPv6, so the family="ipv6" series count the
workload alone, exactly. Where the kernel skips a BPF program because another one was running on
that CPU (it counts those in the program's recursion_misses), the count may be short by exactly
as many: `exact()` allows for that and nothing more.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import TOOL_EXIT_SECONDS, cannot_run
from . import workload
from .conftest import Daemon

K = 23  # bcc's rule for tools: a prime number of events, matched exactly
HOLD = 0.045  # seconds each connection stays open: slot 16 (32.768 ms < t <= 65.536 ms)
TCP_CLOSE = 7
IPV6 = ("family", "ipv6")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def transitions(samples: Samples) -> Counter[tuple[str, str]]:
    """IPv6 state transitions: {(from, to): count}."""
    out: Counter[tuple[str, str]] = Counter()
    for (name, labels), value in samples.items():
        found = dict(labels)
        if name == "bcc_tcp_state_transitions_total" and found.get("family") == "ipv6":
            out[(found["from"], found["to"])] += int(value)
    return out


def lifetimes(samples: Samples) -> dict[str, float]:
    """{le: cumulative count} of the IPv6 connection durations."""
    return {
        dict(labels)["le"]: value
        for (name, labels), value in samples.items()
        if name == "bcc_tcp_connection_duration_seconds_bucket" and IPV6 in labels
    }


class Misses:
    """The kernel's count of runs it skipped, per function of the tcp program (bpftool)."""

    def __init__(self, exporter: Daemon) -> None:
        self.ids = {
            dict(labels)["function"]: dict(labels)["id"]
            for (name, labels) in exporter.scrape()
            if name == "bcc_exporter_program_run_count_total" and ("program", "tcp") in labels
        }
        self.start = self.now()

    def now(self) -> dict[str, int]:
        out = {}
        for function, prog_id in self.ids.items():
            shown = subprocess.run(
                ["bpftool", "-j", "prog", "show", "id", prog_id],
                check=True,
                capture_output=True,
                text=True,
            )
            out[function] = int(json.loads(shown.stdout).get("recursion_misses", 0))
        return out

    def since_start(self, event: str) -> int:
        function = next(f for f in self.ids if f.endswith(f"__{event}"))
        return self.now()[function] - self.start[function]


def exact(observed: float, expected: float, missed: int, what: str) -> None:
    assert expected - missed <= observed <= expected, (what, observed, expected, missed)


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0]  # tcpi_state


def wait_closed(*socks: socket.socket, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any(tcp_state(s) != TCP_CLOSE for s in socks):
        assert time.monotonic() < deadline, [tcp_state(s) for s in socks]
        time.sleep(0.001)


class Tools:
    """bcc tools (IPv6 only, CSV), started before the daemon so that both compile at once."""

    def __init__(self, *tools: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.procs = {
            tool: subprocess.Popen(
                [f"/usr/sbin/{tool}-bpfcc", "-6", "-s"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for tool in tools
        }
        self.attached = False

    def wait_attached(self) -> None:
        for proc in self.procs.values():
            assert proc.stdout is not None
            header = proc.stdout.readline()  # printed once attached
            assert "," in header, proc.communicate()[1]
        self.attached = True

    def stop(self, tool: str) -> list[list[str]]:
        """SIGINT (their way out); what they printed after the header, as CSV rows."""
        assert self.attached
        time.sleep(0.5)  # let it drain its perf buffer
        proc = self.procs[tool]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TOOL_EXIT_SECONDS)
        assert proc.returncode == 0, err
        return [line.split(",") for line in out.splitlines() if line]

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(scope="module")
def tools() -> Iterator[Tools]:
    started = Tools("tcplife", "tcpstates")
    yield started
    started.kill()


@pytest.fixture(scope="module")
def exporter(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the file (a start costs seconds); each test measures its own deltas."""
    log: Path = tmp_path_factory.mktemp("tcp") / "daemon.log"
    started = Daemon(["--config.names=tcp"], log)
    yield started
    started.stop()


def test_connections_transitions_and_lifetimes(exporter, tools):
    tools.wait_attached()
    misses = Misses(exporter)
    before = exporter.scrape()

    spans = []  # per connection: from before connect() until both ends are CLOSE
    handshakes = []  # per connection: from before connect() until accept() returned
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", 0))
        listener.listen(K)
        for _ in range(K):
            start = time.monotonic()
            client = socket.socket(socket.AF_INET6)
            client.connect(listener.getsockname()[:2])
            server, _ = listener.accept()  # only once ESTABLISHED
            handshakes.append(time.monotonic() - start)
            time.sleep(HOLD)
            client.shutdown(socket.SHUT_WR)  # client FIN first
            assert server.recv(1) == b""  # the server has it: CLOSE_WAIT
            server.shutdown(socket.SHUT_WR)
            assert client.recv(1) == b""
            wait_closed(client, server)
            spans.append(time.monotonic() - start)
            client.close()
            server.close()
    after = exporter.scrape()
    missed = misses.since_start("inet_sock_set_state")

    # Each connection: the client's 5 changes and the server's 5 (its socket is born in
    # SYN_RECV, a child of the listener); FIN_WAIT2 -> CLOSE is the client socket handing over
    # to a timewait socket (no TIME_WAIT state change is traced). Plus the listener's two.
    per_connection = {
        ("CLOSE", "SYN_SENT"),
        ("SYN_SENT", "ESTABLISHED"),
        ("ESTABLISHED", "FIN_WAIT1"),
        ("FIN_WAIT1", "FIN_WAIT2"),
        ("FIN_WAIT2", "CLOSE"),
        ("LISTEN", "SYN_RECV"),
        ("SYN_RECV", "ESTABLISHED"),
        ("ESTABLISHED", "CLOSE_WAIT"),
        ("CLOSE_WAIT", "LAST_ACK"),
        ("LAST_ACK", "CLOSE"),
    }
    expected = Counter({t: K for t in per_connection})
    expected.update([("CLOSE", "LISTEN"), ("LISTEN", "CLOSE")])
    seen = transitions(after)
    seen.subtract(transitions(before))
    assert set(+seen) <= set(expected), seen
    for transition, times in expected.items():
        exact(seen[transition], times, missed, f"{transition}")
    into_established = seen[("SYN_SENT", "ESTABLISHED")] + seen[("SYN_RECV", "ESTABLISHED")]
    exact(into_established, 2 * K, missed, "both ends reach ESTABLISHED")

    # Lifetimes: both ends of each connection, each at least HOLD (> 32.768 ms) and at most its
    # span; bucket le=2^k us holds at least the ends whose span was shorter than 2^k us.
    count = delta(after, before, "bcc_tcp_connection_duration_seconds_count", family="ipv6")
    exact(count, 2 * K, missed, "lifetimes")
    buckets = {le: value - lifetimes(before).get(le, 0.0) for le, value in lifetimes(after).items()}
    assert buckets["0.032768"] == 0
    for le, value in buckets.items():
        assert value >= 2 * sum(1 for s in spans if s < float(le)) - missed, (le, buckets, spans)
    total = delta(after, before, "bcc_tcp_connection_duration_seconds_sum", family="ipv6")
    assert 2 * K * HOLD <= total <= 2 * sum(spans)

    # tcpstates, same window: the same transitions, one line each.
    rows = tools.stop("tcpstates")
    states = Counter((r[8], r[9]) for r in rows if r[4] == "::1")
    assert states == +seen
    # tcplife, same window: one line per closing end, MS from its last state before FIN_WAIT1
    # (ESTABLISHED); ours count from SYN_SENT/SYN_RECV, the handshake earlier, which each end
    # went through between the start of connect() and the return of accept(). It prints MS
    # rounded to 0.01.
    rows = tools.stop("tcplife")
    life_ms = [float(r[9]) for r in rows if r[3] == "::1"]
    assert len(life_ms) == count
    rounding = 0.000005 * len(life_ms)
    earlier = total - sum(life_ms) / 1000
    assert -rounding <= earlier <= 2 * sum(handshakes) + rounding, (earlier, handshakes)


def test_refused_connections_reset(exporter):
    misses = Misses(exporter)
    before = exporter.scrape()
    with socket.socket(socket.AF_INET6) as closed:
        closed.bind(("::1", 0))  # a port of ours nobody listens on: SYNs to it get a RST
        for _ in range(K):
            with socket.socket(socket.AF_INET6) as client, pytest.raises(ConnectionRefusedError):
                client.connect(closed.getsockname()[:2])
    after = exporter.scrape()

    # The client socket receives each RST in SYN_SENT.
    exact(
        delta(after, before, "bcc_tcp_resets_received_total", family="ipv6"),
        K,
        misses.since_start("tcp_receive_reset"),
        "resets received",
    )
    # Sent with no socket (state NONE). This series has no family, and other tests' daemons get
    # refused too while they start (their health checks), so: at least ours.
    sent = delta(after, before, "bcc_tcp_resets_sent_total", state="NONE")
    assert sent >= K - misses.since_start("tcp_send_reset")
    missed = misses.since_start("inet_sock_set_state")
    seen = transitions(after)
    seen.subtract(transitions(before))
    assert set(+seen) == {("CLOSE", "SYN_SENT"), ("SYN_SENT", "CLOSE")}, seen
    exact(seen[("CLOSE", "SYN_SENT")], K, missed, "connects")
    exact(seen[("SYN_SENT", "CLOSE")], K, missed, "refused")
    # A refused attempt is a (short) connection lifetime, as tcplife lists it.
    count = delta(after, before, "bcc_tcp_connection_duration_seconds_count", family="ipv6")
    exact(count, K, missed, "lifetimes")


# In a network namespace of its own, SYNs to fd00::2 go out of a veth whose peer drops them
# (the neighbour entry names a MAC nobody has): each connect retransmits its SYN after 1 s.
# The kernel's own count of each socket's retransmits (TCP_INFO tcpi_total_retrans) is printed.
SYN_RETRANSMITS = f"""
import json, socket, struct, subprocess, time
CLONE_NEWNET = 0x40000000
if libc.unshare(CLONE_NEWNET) != 0:
    print(json.dumps({{"skip": "unshare(CLONE_NEWNET): " + os.strerror(ctypes.get_errno())}}))
    sys.exit()
for command in (
    "ip link add v0 type veth peer name v1",
    "ip link set v0 up",
    "ip link set v1 up",
    "ip -6 addr add fd00::1/64 dev v0 nodad",
    "ip -6 neigh add fd00::2 lladdr 02:00:00:00:00:02 dev v0 nud permanent",
):
    done = subprocess.run(command.split(), capture_output=True, text=True)
    if done.returncode != 0:
        print(json.dumps({{"skip": command + ": " + done.stderr.strip()}}))
        sys.exit()
socks = []
for _ in range({K}):
    s = socket.socket(socket.AF_INET6)
    s.setblocking(False)
    try:
        s.connect(("fd00::2", 80))
    except BlockingIOError:
        pass
    socks.append(s)

def retransmits(s):
    return struct.unpack_from("I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 100)[0]

deadline = time.monotonic() + 20
while min(retransmits(s) for s in socks) < 1 and time.monotonic() < deadline:
    time.sleep(0.05)
total = sum(retransmits(s) for s in socks)
for s in socks:
    s.close()  # in SYN_SENT: straight to CLOSE, nothing more is sent
print(json.dumps({{"retransmits": total}}))
"""


def test_syn_retransmits(exporter):
    misses = Misses(exporter)
    before = exporter.scrape()
    result = json.loads(workload.run(workload.unique_comm(), SYN_RETRANSMITS))
    if "skip" in result:
        cannot_run(result["skip"])
    after = exporter.scrape()
    assert result["retransmits"] >= K
    # The retransmit timer fires in softirq context, which may interrupt another BPF program on
    # that CPU: the kernel then skips ours and counts a recursion miss (seen here, now and then).
    exact(
        delta(after, before, "bcc_tcp_retransmits_total", state="SYN_SENT", family="ipv6"),
        result["retransmits"],
        misses.since_start("tcp_retransmit_skb"),
        "SYN retransmits",
    )
