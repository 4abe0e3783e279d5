"""Where a one-program start goes (issue 18): each stage on the way to the first scrape timed
alone, in fresh processes started as the daemon starts them, beside the start it adds up to."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .common import Options, Table, median

# What the daemon's processes import before each stage's work (exporter.cli.main; the server's
# rest while the spawner compiles; the spawner; the compile worker's parent).
SERVER_FIRST = "import exporter.launch, exporter.cli"
SERVER_ALL = SERVER_FIRST + ", exporter.supervisor, exporter.http, exporter.metrics.self_metrics"
SPAWNER = "import exporter.privsep.spawner"
ZYGOTE = (
    "import bcc, exporter.compiler.worker; from exporter.compiler import kallsyms_view; "
    "assert kallsyms_view.narrow(bcc.__version__) is None"
)


def timed(command: list[str], runs: int, stdin: bytes = b"") -> float:
    """Median seconds of `command`, run to its exit `runs` times, from /."""
    times = []
    for _ in range(runs):
        began = time.monotonic()
        subprocess.run(command, input=stdin, check=True, capture_output=True, cwd="/")
        times.append(time.monotonic() - began)
    return median(times)


def config_worker_input(config: Path) -> bytes:
    """What the spawner writes to the config worker: the files it read."""
    return json.dumps([{"path": str(config), "text": config.read_text()}]).encode()


def stage_table(
    title: str,
    opts: Options,
    config: Path,
    logged: tuple[float, float],
    starts: tuple[float, float],
) -> Table:
    """Stages of starting `config` (one program): alone, and whether the start waits for them.
    `logged`: compile and attach seconds, the daemon's own figures for the program (its log
    line); `starts`: ours and the peer's start to first scrape, for the same config."""
    (compile_s, attach_s), (total, peer) = logged, starts
    runs = opts.pick(7, 1)
    python = sys.executable

    def alone(*args: str, stdin: bytes = b"") -> float:
        return timed([python, *args], runs, stdin)

    bare = alone("-I", "-c", "pass")
    rows: list[tuple[str, float, str]] = [
        (
            "interpreter start (`python -I -c pass`)",
            bare,
            "3 times: server, spawner, config worker",
        ),
        (
            "server's imports before it starts the spawner (`exporter.cli`)",
            alone("-c", SERVER_FIRST) - bare,
            "yes",
        ),
        ("spawner's imports", alone("-I", "-c", SPAWNER) - bare, "yes"),
        (
            "config validation (`exporter.config.worker`: pydantic, the models, this config)",
            alone("-I", "-m", "exporter.config.worker", stdin=config_worker_input(config)) - bare,
            "yes",
        ),
        (
            "bcc import and the kallsyms view (the compile worker's parent)",
            alone("-I", "-c", ZYGOTE) - bare,
            "no: beside the config validation",
        ),
        (
            "server's other imports (config models, metrics, uvicorn), privilege drop",
            alone("-c", SERVER_ALL) - alone("-c", SERVER_FIRST),
            "no: beside the spawner's work",
        ),
        ("compile (the daemon's log)", compile_s, "yes"),
        ("attach and fd handoff (the daemon's log)", attach_s, "yes"),
    ]
    on_path = sum(
        seconds * (3 if waits.startswith("3 times") else 1)
        for _, seconds, waits in rows
        if waits == "yes" or waits.startswith("3 times")
    )
    table = Table([title, "alone", "on the way to the first scrape"])
    for stage, seconds, waits in rows:
        table.rows.append([stage, f"{seconds * 1e3:.0f} ms", waits])
    table.rows.append(["sum of the stages the start waits for", f"{on_path * 1e3:.0f} ms", ""])
    table.rows.append(["the start, measured (first complete scrape)", f"{total * 1e3:.0f} ms", ""])
    table.rows.append(
        [
            "the rest: scheduling on 2 CPUs, messages, the scrape itself",
            f"{(total - on_path) * 1e3:.0f} ms",
            "",
        ]
    )
    table.rows.append(
        ["ebpf_exporter v1.2.5, same config (start to first scrape)", f"{peer * 1e3:.0f} ms", ""]
    )
    return table
