"""A month in a minute: continuous churn of processes with comms of their own and of cgroups,
scraped all along, with the daemon's memory, series, map fill and evictions tabled round by
round (docs/operations.md, Keys that come and go)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter.decoders.cgroup import cgroup2_mount
from tests.kernel.churn import Churn

from .common import Options, Section, Table, daemon, status_mb, verdict, wait_complete

PROGRAMS = ["opens", "execs", "syscalls_by_pod", "runqlat_by_pod"]
MAPS = [
    ("opens", "opens_total"),
    ("execs", "exits_total"),
    ("syscalls_by_pod", "pod_syscalls_total"),
]
SCRAPE_SECONDS = 0.5
# Memory may grow while the label caches fill with the first round's keys; not after.
GROWTH_TARGET_MB = 10.0


def run(opts: Options) -> list[Section]:
    rounds = opts.pick(8, 2)
    comms, cgroups = opts.pick(30_000, 300), opts.pick(2_000, 20)
    mount = cgroup2_mount(Path("/proc/self/mounts"))
    if mount is None:
        raise RuntimeError("soak: no cgroup2 file system mounted")
    churn = Churn(opts.workdir)
    missing = opts.workdir / "missing"
    parent = mount / f"bcc_exporter_soak_{uuid.uuid4().hex[:8]}"
    parent.mkdir()
    table = Table(
        [
            "round",
            "processes",
            "cgroups",
            "s",
            "scrapes",
            "server RSS MB",
            "samples",
            *(f"{m} fill" for _, m in MAPS),
            *(f"{m} evictions" for _, m in MAPS),
        ]
    )
    rss: list[float] = []
    try:
        with daemon(opts, "soak", f"--config.names={','.join(PROGRAMS)}") as d:
            wait_complete(d, PROGRAMS)
            stop = threading.Event()
            scrapes = [0]

            def scrape() -> None:
                while not stop.wait(SCRAPE_SECONDS):
                    d.get("/metrics", timeout=120)
                    scrapes[0] += 1

            scraper = threading.Thread(target=scrape, daemon=True)
            scraper.start()
            started = time.monotonic()
            try:
                for n in range(1, rounds + 1):
                    round_dir = parent / f"r{n}"
                    round_dir.mkdir()
                    churn.comms(Churn.prefix(), comms, missing)
                    churn.cgroups(round_dir, cgroups, 23)
                    round_dir.rmdir()
                    samples = _samples(d.get("/metrics", timeout=120))
                    rss.append(status_mb(d.proc.pid, "VmRSS"))
                    table.rows.append(
                        [
                            str(n),
                            f"{n * comms:,}",
                            f"{n * cgroups:,}",
                            f"{time.monotonic() - started:.0f}",
                            str(scrapes[0]),
                            f"{rss[-1]:.0f}",
                            f"{len(samples):,}",
                            *(_fill(samples, p, m) for p, m in MAPS),
                            *(
                                _value(samples, "bcc_exporter_map_evictions_total", p, m)
                                for p, m in MAPS
                            ),
                        ]
                    )
            finally:
                stop.set()
                scraper.join()
    finally:
        parent.rmdir()
    section = Section(
        "Soak: a month of churn in a minute",
        f"The programs {', '.join(PROGRAMS)}, scraped every {SCRAPE_SECONDS} s while each round "
        f"starts {comms:,} processes with comms of their own (each a failed open) and makes, "
        f"uses (23 syscalls) and removes {cgroups:,} cgroups (`tests/kernel/churn.c`). "
        f"{rounds * comms:,} new comms is a month of a node starting a process with a new "
        "name every 10 s. Fill is keys / max_entries after the round; evictions are "
        "`bcc_exporter_map_evictions_total` (keys gone from the map, LRU or deleted with "
        "their cgroup). Target: server RSS grows by less than "
        f"{GROWTH_TARGET_MB:.0f} MB from the first round to the last.",
        [table],
    )
    growth = rss[-1] - rss[0]
    section.notes.append(
        f"RSS growth from round 1 to round {rounds}: {growth:+.1f} MB: "
        + verdict(section, growth < GROWTH_TARGET_MB)
    )
    return [section]


def _samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    program: str,
    map_name: str,
) -> str:
    value = samples.get((name, frozenset({("program", program), ("map", map_name)})))
    return "-" if value is None else f"{value:,.0f}"


def _fill(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], program: str, map_name: str
) -> str:
    labels = frozenset({("program", program), ("map", map_name)})
    entries = samples.get(("bcc_exporter_map_entries", labels))
    most = samples.get(("bcc_exporter_map_max_entries", labels))
    return "-" if entries is None or not most else f"{entries:,.0f} / {most:,.0f}"
