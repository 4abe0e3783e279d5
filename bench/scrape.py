"""Target 4: /metrics latency at 1k, 10k and 100k series, against prometheus_client's stock
exposition of the same samples."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, generate_latest

from .common import Options, Section, Table, daemon, median, p99, verdict, wait_complete

TARGETS_MS = {10_000: 20.0, 100_000: 200.0}  # median
PROGRAM = "bench_scrape"
METRIC = "bcc_bench_series_total"

# A key per getpgid(2) argument of the bench: the bench fills the map to each size by calling
# getpgid(k) for k = 1..size (process groups that do not exist: ESRCH, after the tracepoint),
# and calls it again on a few keys between scrapes so that every scrape sees new values.
CONFIG = """
programs:
  - name: {program}
    cflags: ["-DBENCH_TGID={tgid}", "-DKEYS={keys}"]
    code: |
      BPF_HASH(series, u32, u64, KEYS);
      TRACEPOINT_PROBE(syscalls, sys_enter_getpgid) {{
          if (bpf_get_current_pid_tgid() >> 32 != BENCH_TGID)
              return 0;
          u32 key = args->pid;
          series.increment(key);
          return 0;
      }}
    metrics:
      counters:
        - name: bench_series_total
          help: One series per key the bench inserted.
          map: series
          labels:
            - {{name: key, size: 4, decoders: [{{name: uint}}]}}
"""


def run(opts: Options) -> list[Section]:
    sizes = [100, 1_000] if opts.quick else [1_000, 10_000, 100_000]
    config = opts.workdir / "bench_scrape.yaml"
    config.write_text(CONFIG.format(program=PROGRAM, tgid=os.getpid(), keys=sizes[-1]))
    ours: dict[int, list[float]] = {}
    with daemon(
        opts, "scrape", f"--config.file={config}", f"--metrics.max-series={2 * sizes[-1]}"
    ) as d:
        wait_complete(d, [PROGRAM])
        inserted = 0
        for size in sizes:
            touch(range(inserted + 1, size + 1))
            inserted = size
            body = d.get("/metrics")
            found = body.count(f"\n{METRIC}{{".encode())
            if found != size:
                raise RuntimeError(f"{size} keys inserted but {found} series of {METRIC} scraped")
            ours[size] = timed(lambda: d.get("/metrics"), scrapes(opts, size), between=size)
    stock = {size: timed(stock_exposition(size), scrapes(opts, size)) for size in sizes}
    return [section(ours, stock)]


def scrapes(opts: Options, size: int) -> int:
    return opts.pick({1_000: 200, 10_000: 100}.get(size, 30), 3)


def touch(keys: Iterable[int]) -> None:
    """Count one more for each key: the program sees getpgid(key)."""
    for key in keys:
        with contextlib.suppress(ProcessLookupError):
            os.getpgid(key)


def timed(work: Callable[[], object], times: int, between: int = 0) -> list[float]:
    """Seconds each of `times` runs of `work` took; with `between`, 10 of the keys up to it
    change value before each run (not timed)."""
    samples = []
    for _ in range(times):
        if between:
            touch(random.sample(range(1, between + 1), 10))
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return samples


def stock_exposition(size: int) -> Callable[[], bytes]:
    """generate_latest() of a registry holding the same samples as our scrape."""
    registry = CollectorRegistry()
    counter = Counter(METRIC, "One series per key the bench inserted.", ["key"], registry=registry)
    for key in range(1, size + 1):
        counter.labels(str(key)).inc()
    return lambda: generate_latest(registry)


def section(ours: dict[int, list[float]], stock: dict[int, list[float]]) -> Section:
    result = Section(
        "Scrape cost",
        "A program whose hash map holds N keys (one `uint` label each: the argument of the "
        "bench's `getpgid(2)` calls; 10 values change before each scrape), served alone: "
        "`GET /metrics` over HTTP (plain text, the "
        "daemon's self metrics included), timed by the client. Baseline: prometheus_client's "
        "stock exposition, `generate_latest()` of a `CollectorRegistry` holding a `Counter` "
        "with the same names, label values and values, in-process (no HTTP, no map reads).",
        [],
    )
    table = Table(
        [
            "series",
            "scrapes",
            "ours median",
            "ours p99",
            "stock median",
            "ratio",
            "ours per 1k more series",
            "target (median)",
            "result",
        ]
    )
    previous = (0, 0.0)
    marginal = []
    for size, samples in ours.items():
        target = TARGETS_MS.get(size)
        ours_ms, stock_ms = median(samples) * 1e3, median(stock[size]) * 1e3
        # What the series added since the size before cost, fixed costs (HTTP, self
        # metrics) left out: constant when the cost is linear in series.
        marginal.append((ours_ms - previous[1]) / (size - previous[0]) * 1e3)
        previous = (size, ours_ms)
        table.rows.append(
            [
                f"{size:,}",
                str(len(samples)),
                f"{ours_ms:.1f} ms",
                f"{p99(samples) * 1e3:.1f} ms",
                f"{stock_ms:.1f} ms",
                f"{ours_ms / stock_ms:.2f}",
                f"{marginal[-1]:.2f} ms",
                f"≤ {target:g} ms" if target else "none",
                verdict(result, ours_ms <= target) if target else "–",
            ]
        )
    result.tables.append(table)
    sizes = list(ours)
    result.notes.append(
        f"Linearity: *per 1k more series* is the cost of the series added since the size "
        f"before (from 0 for the first, so it includes the fixed cost); from {sizes[-2]:,} to "
        f"{sizes[-1]:,} series it is {marginal[-1] / marginal[-2]:.2f}× what it was from "
        f"{sizes[-3] if len(sizes) > 2 else 0:,} to {sizes[-2]:,} (1.00: linear)."
    )
    return result
