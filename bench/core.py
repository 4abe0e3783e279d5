"""Figures for the core pipeline: start to first full scrape, daemon RSS, /metrics latency.

Run: .venv/bin/python bench/core.py [--scrapes N]. Prints a Markdown table; not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from exporter.config import select

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return bytes(response.read())


def complete(body: bytes, programs: list[str]) -> bool:
    """Every default program is loaded and collected (or skipped: this kernel lacks it)."""
    text = body.decode()
    return all(
        f'bcc_exporter_collect_success{{program="{p}"}} 1.0' in text
        or f'bcc_exporter_enabled_programs{{program="{p}"}} 0.0' in text
        for p in programs
    )


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def run(scrapes: int, programs: list[str]) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                if complete(scrape(url), programs):
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"daemon exited {proc.returncode}")
            time.sleep(0.02)
        first_scrape = time.monotonic() - started
        latencies = []
        for _ in range(scrapes):
            t = time.perf_counter()
            scrape(url)
            latencies.append(time.perf_counter() - t)
        latencies.sort()
        return {
            "start": first_scrape,
            "rss": vm_rss_mb(proc.pid),
            "median": statistics.median(latencies),
            "p99": latencies[int(len(latencies) * 0.99) - 1],
            "series": float(
                sum(1 for line in scrape(url).splitlines() if not line.startswith(b"#"))
            ),
        }
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    programs = [spec.name for spec in select(None, None, [])]
    runs = [run(args.scrapes, programs) for _ in range(args.runs)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}, kernel {platform.release()}, "
        f"{time.strftime('%Y-%m-%d')}; default config ({', '.join(programs)}), "
        f"median of {args.runs} runs"
    )
    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| start to first complete scrape | {med('start'):.2f} s |")
    print(f"| daemon RSS (VmRSS) after {args.scrapes} scrapes | {med('rss'):.1f} MB |")
    print(
        f"| /metrics latency, median ({med('series'):.0f} samples) | {med('median') * 1e3:.2f} ms |"
    )
    print(f"| /metrics latency, p99 | {med('p99') * 1e3:.2f} ms |")


if __name__ == "__main__":
    main()
