"""Target 5: CPU time per scrape, and idle CPU between scrapes, of both daemon processes."""

from __future__ import annotations

import time
from collections.abc import Callable

from .common import (
    BenchDaemon,
    Options,
    Section,
    Table,
    cpu_seconds,
    daemon,
    verdict,
    wait_complete,
)

IDLE_TARGET = 0.001  # CPU seconds per second (0.1 % of one core): "about zero"


def run(opts: Options) -> list[Section]:
    programs, config = opts.programs, opts.config
    scrapes = opts.pick(200, 10)
    idle = opts.pick(30, 2)
    warm_up = opts.pick(20, 2)
    with daemon(opts, "cpu", *config) as d:
        body = wait_complete(d, programs)
        for _ in range(warm_up):  # warm-up: label caches, first-scrape work
            d.get("/metrics")
        per_scrape = cpu_delta(d, lambda: [d.get("/metrics") for _ in range(scrapes)])
        per_idle = cpu_delta(d, lambda: time.sleep(idle))
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    section = Section(
        "CPU per scrape and idle CPU",
        f"The default config ({len(programs)} programs, {series} samples per scrape): CPU "
        "time (user + system, `/proc/PID/stat`, 10 ms ticks) of the server and the spawner "
        f"over {scrapes} back-to-back scrapes ÷ {scrapes}, after {warm_up} warm-up scrapes; then "
        f"over "
        f"{idle} s with no scrape. The kernel-side cost of the programs is not in these "
        "processes (see the per-event tables).",
        [],
    )
    table = Table(["figure", "server", "spawner", "total", "target", "result"])
    total = sum(per_scrape.values())
    table.rows.append(
        [
            "CPU per scrape",
            f"{per_scrape['server'] / scrapes * 1e3:.2f} ms",
            f"{per_scrape['spawner'] / scrapes * 1e3:.2f} ms",
            f"{total / scrapes * 1e3:.2f} ms",
            "none",
            "–",
        ]
    )
    idle_total = sum(per_idle.values()) / idle
    table.rows.append(
        [
            f"idle CPU over {idle} s",
            f"{per_idle['server'] / idle * 100:.3f} %",
            f"{per_idle['spawner'] / idle * 100:.3f} %",
            f"{idle_total * 100:.3f} %",
            f"≤ {IDLE_TARGET * 100:g} % of a core",
            verdict(section, idle_total <= IDLE_TARGET),
        ]
    )
    section.tables.append(table)
    return [section]


def cpu_delta(d: BenchDaemon, work: Callable[[], object]) -> dict[str, float]:
    """CPU seconds each daemon process spent while `work()` ran."""
    pids = d.processes()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    work()
    return {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
