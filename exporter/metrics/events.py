"""Counters of events a program sends through a BPF_PERF_OUTPUT map (v1's `perf_map`).

Each event's leading bytes decode to labels like a map key; the event counts 1 under them.
A poller thread drains the rings as events arrive, so a burst between scrapes is not lost to
a full ring; every collection drains them too, so a scrape sees what happened before it.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Sequence

from prometheus_client.core import Metric

from ..bpf.perf_buffer import PerfBuffer
from ..config.models import Counter
from ..errors import LoadError
from ..loader import LoadedProgram
from .exposition import Family, SeriesText, counter_type
from .labels import LabelDecoder, is_cpu_label, layout

log = logging.getLogger(__name__)

# After a wake-up, let events gather this long before draining: bounds wake-ups to ~100/s.
BATCH_SECONDS = 0.01


class EventCounter:
    def __init__(self, program: LoadedProgram, where: str, config: Counter) -> None:
        self.config = config
        if any(is_cpu_label(label) for label in config.labels):
            raise LoadError(program.name, f"{where}.labels: a perf_map counter has no cpu label")
        self.fds = [ring.fd for ring in program.perf_rings if ring.map == config.perf_map]
        self.buffers = [PerfBuffer(fd) for fd in self.fds]
        fields, span = layout(program.name, where, config)
        self.labels = LabelDecoder(where, fields, span)
        self.label_names = [label.name for label in config.labels]
        self.text = SeriesText(self.label_names)
        self.counts: dict[tuple[str, ...], int] = {}
        self.lost = 0
        self._lock = threading.Lock()

    @property
    def decoder_errors(self) -> int:
        return self.labels.errors

    def drain(self) -> None:
        with self._lock:
            for buffer in self.buffers:
                samples, lost = buffer.read()
                self.lost += lost
                for sample in samples:
                    if len(sample) < self.labels.span:
                        self.labels.errors += 1
                        continue
                    labels = self.labels(sample)
                    if labels is not None:
                        self.counts[labels] = self.counts.get(labels, 0) + 1

    def family(self, name: str) -> Metric:
        self.drain()
        with self._lock:
            series = list(self.counts.items())
        return Family(name, self.config.help, counter_type(self.config), self.text, series)

    def close(self) -> None:
        with self._lock:
            for buffer in self.buffers:
                buffer.close()
            self.buffers = []


def _close_pipe(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class EventPoller(threading.Thread):
    """Drains every event counter's rings whenever the kernel signals new events."""

    def __init__(self, counters: Sequence[EventCounter]) -> None:
        super().__init__(name="perf-events", daemon=True)
        self.counters = list(counters)
        # stop() writes here: the thread sleeps until events or stop, never on a timeout (an
        # idle daemon wakes for nothing).
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # Closed with the poller, not by stop(): a stopped poller may be stopped again.
        weakref.finalize(self, _close_pipe, self._wake_read, self._wake_write)

    def run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        owner: dict[int, EventCounter] = {}
        for counter in self.counters:
            for fd in counter.fds:
                poller.register(fd, select.POLLIN)
                owner[fd] = counter
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_read in ready:
                return
            time.sleep(BATCH_SECONDS)
            for counter in {owner[fd] for fd in ready}:
                try:
                    counter.drain()
                except Exception as err:  # noqa: BLE001 - keep draining the others
                    log.error("%s: reading events failed: %s", counter.labels.where, err)

    def stop(self) -> None:
        os.write(self._wake_write, b"x")
        if self.ident is not None:  # started
            self.join(timeout=2)
