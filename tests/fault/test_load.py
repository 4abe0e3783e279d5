"""Load: 50 concurrent scrapers against 10 000 series, no errors; p50/p99 latency printed.

A real program fills a hash map with 10 000 keys: getpriority(MAGIC, n) for n < 10 000 (an
invalid `which`, so the calls are cheap EINVALs and no other process makes them), each n a key.

Each scraper makes up to FAULT_LOAD_SCRAPES scrapes (default 100) on a keep-alive connection,
as Prometheus does, and stops at FAULT_LOAD_SECONDS (default 30), a bound for slow machines:
here all 50 x 100 take ~10 s. Concurrent scrapes share collections and rendered bodies
(exporter.http.app.SingleFlight), so the daemon collects far fewer times than it is scraped;
the test shows it with the scrape histogram's count. The figures printed say how many
scrapes were made and how long they took.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import statistics
import threading
import time
from pathlib import Path

SERIES = 10_000
SCRAPERS = 50
SCRAPES = int(os.environ.get("FAULT_LOAD_SCRAPES", "100"))
SECONDS = float(os.environ.get("FAULT_LOAD_SECONDS", "30"))

CONFIG = """
programs:
  - name: load
    namespace: fault
    cflags: ["-DMAGIC={magic}", "-DENTRIES={entries}"]
    code: |
      BPF_HASH(series, u32, u64, ENTRIES);
      TRACEPOINT_PROBE(syscalls, sys_enter_getpriority) {{
          if (args->which != MAGIC)
              return 0;
          u32 key = args->who;
          series.increment(key);
          return 0;
      }}
    metrics:
      counters:
        - name: load_series_total
          help: One series per getpriority(MAGIC, n) call's n.
          map: series
          labels:
            - {{name: n, size: 4, decoders: [{{name: uint}}]}}
"""


def config(magic: int, entries: int = 16384) -> str:
    return CONFIG.format(magic=magic, entries=entries)


def fill(magic: int, series: int = SERIES) -> None:
    for n in range(series):
        # EINVAL: the point is the syscall, not its answer.
        with contextlib.suppress(OSError):
            os.getpriority(magic, n)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_50_scrapers_against_10k_series(daemon, write_config, capsys):
    magic = 0x10000 + secrets.randbelow(1 << 30)
    exporter = daemon(f"--config.file={write_config('load', config(magic))}")
    fill(magic)
    last = f'fault_load_series_total{{n="{SERIES - 1}"}} 1.0'.encode()
    body = exporter.get("/metrics")
    assert body.count(b"fault_load_series_total{") == SERIES and last in body

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(SCRAPERS + 1)
    deadline = 0.0

    def scraper() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=60)
        start.wait()
        for _ in range(SCRAPES):
            if time.monotonic() > deadline:
                break
            began = time.perf_counter()
            try:
                conn.request("GET", "/metrics")
                response = conn.getresponse()
                data = response.read()
                error = None
                if response.status != 200 or data.count(b"\n") < SERIES or last not in data:
                    error = f"status {response.status}, {len(data)} bytes"
            except (OSError, http.client.HTTPException) as err:
                error = repr(err)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=60)
            elapsed = time.perf_counter() - began
            with lock:
                latencies.append(elapsed)
                if error is not None:
                    errors.append(error)
        conn.close()

    threads = [threading.Thread(target=scraper) for _ in range(SCRAPERS)]
    for t in threads:
        t.start()
    began = time.monotonic()
    deadline = began + SECONDS
    start.wait()
    for t in threads:
        t.join(timeout=SECONDS + 120)
    wall = time.monotonic() - began
    assert not any(t.is_alive() for t in threads), "a scraper hung"

    assert errors == [], f"{len(errors)} failed scrapes, e.g. {errors[:3]}"
    assert len(latencies) >= SCRAPERS, "every scraper made at least one scrape"
    assert exporter.proc.poll() is None
    ms = [s * 1000 for s in latencies]
    summary = (
        f"\nload: {len(latencies)} scrapes of {SERIES} series by {SCRAPERS} concurrent scrapers "
        f"in {wall:.1f} s ({len(latencies) / wall:.1f}/s), 0 errors; latency p50 "
        f"{percentile(ms, 0.5):.0f} ms, p99 {percentile(ms, 0.99):.0f} ms, max {max(ms):.0f} ms, "
        f"mean {statistics.fmean(ms):.0f} ms; daemon RSS {rss_kb(exporter.proc.pid) // 1024} MB"
    )
    with capsys.disabled():
        print(summary)
    # Bodies rendered (one per collection and encoding) < scrapes served: they shared.
    rendered = exporter.value("bcc_exporter_scrape_duration_seconds_count")
    assert 0 < rendered < len(latencies)
    with capsys.disabled():
        print(f"load: {rendered:.0f} bodies rendered for {len(latencies)} concurrent scrapes")
    # The daemon still answers, and the counts did not move.
    body = exporter.get("/metrics")
    assert body.count(b"fault_load_series_total{") == SERIES and last in body
