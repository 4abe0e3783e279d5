"""Target 2: daemon RSS with the default config after warm-up, and the compile workers' peak."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import (
    Options,
    Section,
    Table,
    daemon,
    median,
    pss_mb,
    status_mb,
    verdict,
    wait_complete,
)

TARGET_MB = 60.0

# Given as --loader.python: runs the real interpreter as its child and, once it exits, writes
# the child's peak RSS from wait4(2) (the kernel's own high-water mark of that process, exact
# however briefly the peak lasted). The worker inherits its fds and stdin across fork/exec.
WRAPPER = """#!{python}
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv({python!r}, [{python!r}, *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
with open({out!r}, "a") as out:
    out.write(json.dumps({{"maxrss_kb": usage.ru_maxrss}}) + "\\n")
os._exit(os.waitstatus_to_exitcode(status))
"""


def run(opts: Options) -> list[Section]:
    programs, config = opts.programs, opts.config
    peaks_log = opts.workdir / "worker_peaks.jsonl"
    wrapper = write_wrapper(opts.workdir / "worker_python", peaks_log)
    scrapes = opts.pick(200, 10)
    with daemon(opts, "rss", f"--loader.python={wrapper}", *config) as d:
        wait_complete(d, programs)
        for _ in range(scrapes):
            d.get("/metrics")
        pids = d.processes()
        rss = {name: status_mb(pid, "VmRSS") for name, pid in pids.items()}
        hwm = {name: status_mb(pid, "VmHWM") for name, pid in pids.items()}
        pss = {name: pss_mb(pid) for name, pid in pids.items()}
    peaks = [json.loads(line)["maxrss_kb"] / 1024 for line in peaks_log.read_text().splitlines()]

    section = Section(
        "Daemon memory",
        f"The default config ({len(programs)} programs) after {scrapes} scrapes: VmRSS and "
        "VmHWM (peak) of the two processes of the daemon, the server (serves `/metrics`, "
        "holds every fd) and the privileged spawner (starts compile workers), and their PSS "
        "(shared pages split between them, so the sum is what the node pays). Workers: the "
        "peak RSS of each compile worker from `wait4(2)` (a `--loader.python` wrapper). "
        "Baseline: one compile worker's peak, i.e. a process that imports `bcc` and compiles "
        "one program, as any BCC tool does.",
        [],
    )
    worker_peak = max(peaks) if peaks else 0.0
    total_pss = sum(pss.values())
    table = Table(["figure", "ours", "BCC worker peak", "ratio", "target", "result"])
    for name in pids:
        table.rows.append(
            [
                f"{name} VmRSS (peak VmHWM {hwm[name]:.1f} MB, PSS {pss[name]:.1f} MB)",
                f"{rss[name]:.1f} MB",
                "",
                "",
                "",
                "",
            ]
        )
    table.rows.append(
        [
            "daemon total (server + spawner PSS)",
            f"{total_pss:.1f} MB",
            f"{worker_peak:.1f} MB",
            f"{total_pss / worker_peak:.2f}" if worker_peak else "–",
            f"≤ {TARGET_MB:g} MB",
            verdict(section, total_pss <= TARGET_MB),
        ]
    )
    section.tables.append(table)
    section.tables.append(
        Table(
            ["compile workers", "count", "median peak RSS", "largest peak RSS"],
            [
                [
                    "one per core, plus the header check when not cached",
                    str(len(peaks)),
                    f"{median(peaks):.1f} MB" if peaks else "–",
                    f"{worker_peak:.1f} MB",
                ]
            ],
        )
    )
    section.notes.append(
        "Workers run one per core (`--loader.jobs`) at once, plus the header check beside them "
        "when its offsets are not cached; each compiles its share of the programs one after "
        "another and keeps what it compiled until it exits: the node's peak during start is "
        "about the daemon plus that many worker peaks."
    )
    return [section]


def write_wrapper(path: Path, out: Path) -> Path:
    path.write_text(WRAPPER.format(python=sys.executable, out=str(out)))
    path.chmod(0o755)
    return path
