"""The built-in hardirqs program on interrupts with a known count: virtio-rng hands out
random bytes from a 64-byte buffer and, once a read has taken them all, asks the device for
the next buffer, which the device signals with one interrupt. So 23 reads of 64 bytes from
/dev/hwrng, started and ended with the device idle, are 23 interrupts (and more if the
kernel's hwrng thread reads it meanwhile).

The kernel counts interrupts per line in /proc/interrupts, right before calling the handlers:
read before and after each scrape, it brackets our count of every handler, exactly whenever
the kernel handed every irq_handler_entry/exit event to the BPF programs (a witness program on
the same tracepoints counts the events it was handed, by irq number; here the kernel often
does not: it drops the events of interrupts that come while a BPF program or a bpf(2) map
operation is running on their CPU). hardirqs-bpfcc, run over the same window, sees the same
handlers and the same count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .histograms import Samples, bcc_tool, scraped, series, sum_held

N = 23  # bcc's rule for tools: a prime number of events, matched exactly
NS = 1e-9
METRIC = "bcc_hardirq_time_seconds"


def interrupt_lines() -> list[tuple[int, int, list[str]]]:
    """/proc/interrupts lines of drivers' interrupts: (irq, count over CPUs, handler names)."""
    lines = Path("/proc/interrupts").read_text().splitlines()
    ncpu = len(lines[0].split())
    found = []
    for line in lines[1:]:
        irq, rest = line.split(":", 1)
        fields = rest.split()
        if not irq.strip().isdigit() or len(fields) < ncpu + 3:
            continue  # LOC, NMI, ...: no handler of a driver
        # After the per-CPU counts: the chip, the hardware irq and trigger ("3-edge"), then the
        # handlers, ", "-separated on a shared line.
        names = " ".join(fields[ncpu + 2 :]).split(", ")
        found.append((int(irq), sum(int(n) for n in fields[:ncpu]), names))
    return found


def proc_interrupts() -> dict[str, tuple[list[int], int]]:
    """{handler name: (its irqs, their count)} of the handlers alone on their lines (a name can
    be on several: ACPI:Ged here), whose calls are what the kernel counts for those lines."""
    lines = interrupt_lines()
    shared = {name for _, _, names in lines if len(names) > 1 for name in names}
    found: dict[str, tuple[list[int], int]] = {}
    for irq, n, names in lines:
        if names[0] not in shared:
            irqs, total = found.get(names[0], ([], 0))
            found[names[0]] = ([*irqs, irq], total + n)
    return found


def interrupts_reach(handler: str, count: int, timeout: float = 60) -> None:
    """Wait until /proc/interrupts counts `count` interrupts of a handler's lines."""
    deadline = time.monotonic() + timeout
    while (seen := proc_interrupts()[handler][1]) < count:
        assert time.monotonic() < deadline, f"{handler}: {seen} interrupts, not {count}"
        time.sleep(0.01)


WITNESS = """
programs:
  - name: irq_events
    code: |
      struct key { s32 irq; u32 way; };
      BPF_HASH(events, struct key, u64, 1024);
      TRACEPOINT_PROBE(irq, irq_handler_entry) {
          struct key key = {.irq = args->irq};
          events.atomic_increment(key);
          return 0;
      }
      TRACEPOINT_PROBE(irq, irq_handler_exit) {
          struct key key = {.irq = args->irq, .way = 1};
          events.atomic_increment(key);
          return 0;
      }
    metrics:
      counters:
        - name: test_irq_events_total
          help: irq_handler_entry/exit events, as the kernel handed them to BPF programs.
          map: events
          labels:
            - {name: irq, size: 4, decoders: [{name: uint}]}
            - name: way
              size: 4
              decoders: [{name: uint}, {name: static_map, static_map: {0: entry, 1: exit}}]
"""


def delivered(before: Samples, after: Samples, irqs: list[int]) -> tuple[float, float]:
    """(entry events, exit events) of these irqs the witness got between two scrapes."""

    def way(w: str) -> float:
        keys = [
            ("bcc_test_irq_events_total", frozenset({("irq", str(i)), ("way", w)})) for i in irqs
        ]
        return sum(after.get(key, 0.0) - before.get(key, 0.0) for key in keys)

    return way("entry"), way("exit")


def handlers_return(
    scrape: Callable[[], Samples], before: Samples, irqs: list[int], timeout: float = 5
) -> None:
    """Wait until the witness saw as many exits as entries of these irqs' handlers since
    `before`: none still running. /proc/interrupts counts an interrupt before calling its
    handler, we count the call when it returns: a scrape reading our map while the last call
    runs is one short of the count read before it, and if the witness's map is read after ours,
    the call has returned by then and the witness's counts do not say so. Bounded: an event the
    kernel did not hand the witness (an exit without its entry, or a call that entered before
    `before`) can keep the counts apart for good; the test then goes on as it would have."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries, exits = delivered(before, scrape(), irqs)
        if entries == exits:
            return
        time.sleep(0.01)


def hwrng_handler() -> str:
    """The interrupt handler of the virtio-rng device behind /dev/hwrng ("virtio4-input")."""
    current = Path("/sys/class/misc/hw_random/rng_current")
    if not current.exists() or not current.read_text().startswith("virtio_rng"):
        pytest.skip("no virtio-rng behind /dev/hwrng: no interrupts of a known count")
    devices = sorted(Path("/sys/bus/virtio/drivers/virtio_rng").glob("virtio*"))
    assert len(devices) == 1, devices
    return f"{devices[0].name}-input"  # the name of its one virtqueue


def test_hwrng_reads(daemon, write_config):
    handler = hwrng_handler()
    exporter = daemon("--config.names=hardirqs", f"--config.file={write_config('w', WITNESS)}")
    rng = os.open("/dev/hwrng", os.O_RDONLY)
    try:
        idle = proc_interrupts()[handler][1]
        os.read(rng, 64)  # take what the driver holds: the next buffer is asked for now
        interrupts_reach(handler, idle + 1)  # and has come before the window opens
        outer = [proc_interrupts()]  # before the tool attached; and after it exited
        with bcc_tool("/usr/sbin/hardirqs-bpfcc", "-C") as tool:
            # A scrape reads one program's maps, then the other's: the witness's window
            # around ours is from a scrape before `before` to one after `after`.
            wide = [exporter.scrape()]
            started = time.monotonic()  # the window holds both scrapes: each adds to the sum
            p0 = proc_interrupts()
            before = exporter.scrape()
            p1 = proc_interrupts()
            for _ in range(N):
                assert len(os.read(rng, 64)) == 64
            # The buffer asked for after the last read comes in the window: waited for, as a
            # busy host can take more than 100 ms to answer.
            interrupts_reach(handler, p1[handler][1] + N)
            # Its last call returned before `after` reads our map, as before /proc/interrupts
            # and the witness's map are read around it.
            handlers_return(exporter.scrape, before, p1[handler][0])
            p2 = proc_interrupts()
            after = exporter.scrape()
            p3 = proc_interrupts()
            window = time.monotonic() - started
            wide.append(exporter.scrape())
        outer.append(proc_interrupts())
    finally:
        os.close(rng)

    ours = {name: scraped(before, after, METRIC, handler=name) for name in p3}
    handlers = {name for _, _, names in interrupt_lines() for name in names}
    assert series(after, METRIC + "_count", "handler") <= handlers
    ncpu = os.cpu_count() or 1
    for name, (irqs, _) in p3.items():
        hist = ours[name]
        low, high = p2[name][1] - p1[name][1], p3[name][1] - p0[name][1]
        entries, exits = delivered(before, after, irqs)
        why = (name, hist, low, high, entries, exits)
        # One handler call each time the kernel counted its line (with one handler on it)...
        assert hist.total <= high + ncpu, why
        # ... except the events it did not hand to BPF programs: each lost entry or exit costs
        # one call. Interrupts being handled while a scrape read the maps count for one side
        # only (the kernel counts on entry, we on exit): at most one per CPU.
        assert hist.total <= min(delivered(*wide, irqs)) + ncpu, why
        assert hist.total >= low - (high - entries) - (high - exits) - ncpu, why
        if hist.total:
            # The sum, read at another moment than the counts, against the wide scrapes; each
            # call there takes some nanoseconds.
            around = scraped(*wide, METRIC, handler=name)
            assert sum_held(hist, around, ncpu, window, NS), (*why, around, window)
            assert around.sum > 0, (*why, around)

    # The device's interrupts: the premise, from the kernel, is one per read, and more when
    # the kernel's own hwrng thread reads it to feed the entropy pool (seen once beside the
    # busy neighbour); all the handler calls counted whenever the kernel handed us every
    # event (the witness says how many).
    low, high = p2[handler][1] - p1[handler][1], p3[handler][1] - p0[handler][1]
    assert N <= low <= high, (p0, p3)
    entries, exits = delivered(before, after, p3[handler][0])
    lost = (high - entries) + (high - exits)
    assert low - lost <= ours[handler].total <= high, (ours[handler], low, high, entries, exits)

    # hardirqs-bpfcc -C, attached just before the first scrape and stopped just after the
    # second: handlers of /proc/interrupts, the device's among them with the same count. (It
    # counts the calls that handled the interrupt, we count every call: a shared line calls
    # each handler on it.) Its classic tracepoints lose the events ours lose.
    rows = [line.split() for line in tool.output.splitlines()]
    theirs = {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}
    assert set(theirs) <= handlers, theirs
    most = outer[1][handler][1] - outer[0][handler][1]
    assert low - lost <= theirs.get(handler, 0) <= most, (theirs, low, most, entries, exits)
    # A handler it saw handle interrupts ran in our window, or only in the margins around it:
    # from before the tool attached to our first scrape, from our second to after it exited.
    for name, n in theirs.items():
        if name not in p3:
            continue  # on a shared line: no count of its own
        margins = (p1[name][1] - outer[0][name][1]) + (outer[1][name][1] - p2[name][1])
        assert ours[name].total or n <= margins, (name, n, margins)
