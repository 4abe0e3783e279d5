"""Side by side with cloudflare/ebpf_exporter v1.2.5 (Go + libbcc) on the same v1 configs:
keep-alive `GET /metrics`, medians of interleaved runs, and CPU per scrape.

The peer comes from the environment: PEER_BIN=/path/to/ebpf_exporter, and PEER_SRC=/path to
a checkout of github.com/cloudflare/ebpf_exporter at tag v1.2.5 (its examples/ are the
configs; without PEER_BIN the binary is built from it, which needs Debian's golang-go and
libbpfcc-dev, and its vendored gobpf's `bcc_func_load` call given one more trailing
argument, `C.int(-1)`, for libbcc 0.26). Without them the bench says so and measures ours
alone, on the built-in programs of the same kinds.
"""

from __future__ import annotations

import http.client
import os
import re
import statistics
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.conftest import free_port

from .common import Options, Section, Table, cpu_seconds, daemon, verdict, wait_complete

# What each config is, and the peer's examples/ files that make it.
PEER_CONFIGS = {
    "timers by ksym": ["timers.yaml"],
    "block I/O latency histogram": ["bio-tracepoints.yaml"],
    "five programs": [
        "timers.yaml",
        "timers-raw-tracepoints.yaml",  # renamed: it repeats timers' names
        "bio-tracepoints.yaml",
        "eaddrinuse.yaml",
        "mcevents.yaml",
    ],
}
# Without the peer: our built-in programs of the same kinds.
OWN_CONFIGS = {
    "timers by ksym": ["timers"],
    "block I/O latency histogram": ["biolatency"],
    "five programs": ["timers", "biolatency", "syscalls", "opens", "execs"],
}
TARGET_RATIO = 1.0


@dataclass
class Side:
    """One daemon under test: its server process, port and what it measured."""

    pid: int
    port: int
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0  # seconds, over every measured scrape
    series: int = 0

    def scrape_block(self, scrapes: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            cpu = cpu_seconds(self.pid)
            for _ in range(scrapes):
                began = time.perf_counter()
                conn.request("GET", "/metrics")
                body = conn.getresponse().read()
                self.latencies.append(time.perf_counter() - began)
            self.cpu += cpu_seconds(self.pid) - cpu
        finally:
            conn.close()
        self.series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def peer() -> tuple[Path | None, Path | None, str]:
    """(binary, examples dir, why not) of the peer, from PEER_BIN and PEER_SRC."""
    source = Path(os.environ["PEER_SRC"]) if os.environ.get("PEER_SRC") else None
    binary = Path(os.environ["PEER_BIN"]) if os.environ.get("PEER_BIN") else None
    if source is None or not (source / "examples").is_dir():
        return None, None, "PEER_SRC (a checkout of ebpf_exporter v1.2.5) is not set"
    if binary is None:
        binary = source / "ebpf_exporter"
        if not binary.exists():
            env = {**os.environ, "GOFLAGS": "-mod=vendor", "GOPROXY": "off"}
            built = subprocess.run(
                ["go", "build", "-o", str(binary), "./cmd/ebpf_exporter"],
                cwd=source,
                env=env,
                capture_output=True,
                text=True,
            )
            if built.returncode:
                return None, None, f"building the peer failed: {built.stderr[-500:]}"
    return binary, source / "examples", ""


def merged(examples: Path, files: list[str], out: Path) -> Path:
    """One v1 config holding the programs of `files` (the peer reads a single file); a
    program whose name was taken gets `second_` before its name and its metrics'."""
    programs = [p for f in files for p in yaml.safe_load((examples / f).read_text())["programs"]]
    names: set[str] = set()
    for program in programs:
        if program["name"] in names:
            program["name"] = f"second_{program['name']}"
            for metric in (m for kind in program["metrics"].values() for m in kind):
                metric["name"] = f"second_{metric['name']}"
        names.add(program["name"])
    out.write_text(yaml.safe_dump({"programs": programs}, sort_keys=False))
    out.chmod(0o644)  # ours refuses group-writable configs
    return out


def ready(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/metrics")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing serves /metrics on port {port} after {timeout} s")


def run(opts: Options) -> list[Section]:
    binary, examples, missing = peer()
    rounds, scrapes = opts.pick(10, 2), opts.pick(200, 20)
    rows = []
    for kind in PEER_CONFIGS:
        with ExitStack() as stack:
            if examples is not None:
                slug = re.sub(r"\W+", "_", kind)
                config = merged(examples, PEER_CONFIGS[kind], opts.workdir / f"{slug}.yaml")
                ours_args = [f"--config.file={config}"]
                names = [p["name"] for p in yaml.safe_load(config.read_text())["programs"]]
            else:
                names = OWN_CONFIGS[kind]
                ours_args = [f"--config.names={','.join(names)}"]
            d = stack.enter_context(daemon(opts, f"peer-{len(rows)}", *ours_args, wait=False))
            sides = {"ours": Side(d.proc.pid, d.port)}
            if binary is not None:
                port = free_port()
                log = stack.enter_context((opts.workdir / f"peer-{len(rows)}.go.log").open("wb"))
                process = subprocess.Popen(
                    [
                        str(binary),
                        f"--config.file={config}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                stack.callback(process.wait)
                stack.callback(process.terminate)
                sides["peer"] = Side(process.pid, port)
            wait_complete(d, names)  # ours serves while its programs still load
            for side in sides.values():
                ready(side.port)
                side.scrape_block(scrapes)  # warm-up: caches, first-scrape work
                side.latencies, side.cpu = [], 0.0
            for round_ in range(rounds):  # interleaved, each side first every other round
                order = list(sides.values())
                for side in order[:: 1 if round_ % 2 else -1]:
                    side.scrape_block(scrapes)
        rows.append((kind, sides))
    return [section(rows, missing, opts)]


def section(rows: list[tuple[str, dict[str, Side]]], missing: str, opts: Options) -> Section:
    result = Section(
        "Side by side with ebpf_exporter v1.2.5",
        "Each config served by both daemons at once (ours: the server process, privilege "
        "separation on; the peer: Go + libbcc, built from its v1.2.5 source). Keep-alive "
        f"`GET /metrics`, {opts.pick(10, 2)} interleaved rounds of {opts.pick(200, 20)} "
        "scrapes each side (each side first every other round), after a warm-up round; "
        "latency timed by the client; CPU per scrape from the process's utime + stime.",
        [],
    )
    table = Table(
        [
            "config",
            "series (ours / peer)",
            "ours median",
            "peer median",
            "ratio",
            "ours CPU / scrape",
            "peer CPU / scrape",
            "CPU ratio",
            f"target (ratio ≤ {TARGET_RATIO:g})",
        ]
    )
    for kind, sides in rows:
        ours, peer_side = sides["ours"], sides.get("peer")
        ours_ms = statistics.median(ours.latencies) * 1e3
        ours_cpu = ours.cpu / len(ours.latencies) * 1e3
        if peer_side is None:
            table.rows.append(
                [kind, str(ours.series), f"{ours_ms:.3f} ms", "–", "–", f"{ours_cpu:.3f} ms"]
                + ["–"] * 3
            )
            continue
        peer_ms = statistics.median(peer_side.latencies) * 1e3
        peer_cpu = peer_side.cpu / len(peer_side.latencies) * 1e3
        ratio, cpu_ratio = ours_ms / peer_ms, ours_cpu / peer_cpu
        table.rows.append(
            [
                kind,
                f"{ours.series} / {peer_side.series}",
                f"{ours_ms:.3f} ms",
                f"{peer_ms:.3f} ms",
                f"{ratio:.2f}",
                f"{ours_cpu:.3f} ms",
                f"{peer_cpu:.3f} ms",
                f"{cpu_ratio:.2f}",
                verdict(result, ratio <= TARGET_RATIO and cpu_ratio <= TARGET_RATIO),
            ]
        )
    result.tables.append(table)
    if missing:
        result.notes.append(f"No peer: {missing}; ours alone, on built-in programs.")
    else:
        result.notes.append(
            "Series count every line of the body but comments: both add their own self "
            "metrics (ours: collection success and duration per program, process metrics)."
        )
    return result
