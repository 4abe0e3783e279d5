"""Target 3: start to first complete scrape with the default config, per-program compile times
and the critical path, from the daemon's own log lines stamped as they appear."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from .common import (
    BenchDaemon,
    LogClock,
    Options,
    Section,
    Table,
    median,
    verdict,
    wait_complete,
)

TARGET = 3.0  # seconds
STOP_TARGET = 2.0  # seconds from SIGTERM to exit, every program detached (issue 5)
COMPILING = re.compile(r'program "(\w+)": compiling$')
READY = re.compile(
    r'program "(\w+)": ready in ([\d.]+) s \(compile ([\d.]+) s, attach ([\d.]+) s\)'
)
SKIPPED = re.compile(r'program "(\w+)": skipped: ')
HEADERS_START = "compiling against kernel headers"
HEADERS_DONE = re.compile(
    r"kernel headers (agree|at .* do not match)|cannot check the kernel headers"
)


@dataclass
class Program:
    name: str
    started: float  # seconds after the daemon was started
    ready: float = 0.0
    compile: float = 0.0
    attach: float = 0.0
    skipped: bool = False


@dataclass
class Start:
    complete: float  # first complete scrape, seconds after the daemon was started
    programs: dict[str, Program]
    headers: tuple[float, float] | None  # header check: started, done
    stop: float = 0.0  # SIGTERM to exit, seconds
    exit_code: int | None = None

    def critical_path(self) -> list[Program]:
        """The chain of programs that ran one after another in the worker slot that finished
        last: each one started when the one before it in that slot was ready."""
        done = [p for p in self.programs.values() if p.ready]
        if not done:
            return []
        path = [max(done, key=lambda p: p.ready)]
        while True:
            before = [p for p in done if p.ready <= path[0].started + 0.02 and p not in path]
            if not before:
                return path
            path.insert(0, max(before, key=lambda p: p.ready))


def run(opts: Options) -> list[Section]:
    programs, config = opts.programs, opts.config
    starts = [one_start(opts, programs, config, i) for i in range(opts.pick(3, 1))]
    starts.sort(key=lambda s: s.complete)
    typical = starts[len(starts) // 2]
    section = Section(
        "Start to first complete scrape, and stop",
        f"The default config ({len(programs)} programs), {len(starts)} fresh daemons: seconds "
        "from starting the process to the first `/metrics` on which every program is "
        "collected (or skipped), scraped every 10 ms. Baseline: the same programs compiled one "
        "after another (the sum of their times from `compiling` to `ready`), which the "
        "parallel workers (one per core) beat by the ratio shown. Then SIGTERM: seconds to "
        "the process's exit, which comes after every program is detached.",
        [],
    )
    first = median([s.complete for s in starts])
    stop = median([s.stop for s in starts])
    exits = {s.exit_code for s in starts}
    serial = sum(p.ready - p.started for p in typical.programs.values() if p.ready)
    section.tables.append(
        Table(
            ["figure", "ours", "serial compiles", "ratio", "target", "result"],
            [
                [
                    f"start to first complete scrape (median of {len(starts)})",
                    f"{first:.2f} s",
                    f"{serial:.2f} s",
                    f"{first / serial:.2f}" if serial else "–",
                    f"≤ {TARGET:g} s",
                    verdict(section, first <= TARGET),
                ],
                [
                    f"SIGTERM to exit, every program detached (median of {len(starts)}; "
                    f"exit codes {', '.join(map(str, sorted(exits, key=str)))})",
                    f"{stop:.2f} s",
                    "",
                    "",
                    f"≤ {STOP_TARGET:g} s",
                    verdict(section, stop <= STOP_TARGET and exits == {0}),
                ],
            ],
        )
    )
    section.tables.append(program_table(typical))
    section.notes += path_notes(typical)
    return [section]


def one_start(opts: Options, programs: list[str], config: list[str], index: int) -> Start:
    started = time.monotonic()
    d = BenchDaemon(config, opts.workdir / f"start{index}.log", wait=False)
    clock = LogClock(d.log_path, started)
    try:
        wait_complete(d, programs)
        complete = time.monotonic() - started
    finally:
        stopping = time.monotonic()
        exit_code = d.stop()
        stop = time.monotonic() - stopping
        lines = clock.stop()
    start = parse(lines, complete)
    start.stop, start.exit_code = stop, exit_code
    return start


def parse(lines: list[tuple[float, str]], complete: float) -> Start:
    programs: dict[str, Program] = {}
    headers_started = headers_done = None
    for at, line in lines:
        if m := COMPILING.search(line):
            programs[m[1]] = Program(m[1], at)
        elif m := READY.search(line):
            p = programs[m[1]]
            p.ready, p.compile, p.attach = at, float(m[3]), float(m[4])
        elif m := SKIPPED.search(line):
            programs[m[1]].skipped = True
        elif HEADERS_START in line:
            headers_started = at
        elif HEADERS_DONE.search(line) and headers_started is not None:
            headers_done = at
    headers = (headers_started, headers_done) if headers_started and headers_done else None
    return Start(complete, programs, headers)


def program_table(start: Start) -> Table:
    path = start.critical_path()
    table = Table(
        [
            "program",
            "compiling at",
            "ready at",
            "ready in",
            "compile",
            "worker + attach",
            "critical path",
        ]
    )
    for p in sorted(start.programs.values(), key=lambda p: p.started):
        if p.skipped or not p.ready:
            table.rows.append([f"`{p.name}`", f"{p.started:.2f} s", "skipped", "", "", "", ""])
            continue
        table.rows.append(
            [
                f"`{p.name}`",
                f"{p.started:.2f} s",
                f"{p.ready:.2f} s",
                f"{p.ready - p.started:.2f} s",
                f"{p.compile:.2f} s",
                f"{p.ready - p.started - p.compile:.2f} s",
                "✓" if p in path else "",
            ]
        )
    if start.headers:
        began, done = start.headers
        table.rows.append(
            [
                "header check (in parallel)",
                f"{began:.2f} s",
                f"{done:.2f} s",
                f"{done - began:.2f} s",
                "",
                "",
                "",
            ]
        )
    return table


def path_notes(start: Start) -> list[str]:
    path = start.critical_path()
    if not path:
        return ["No program became ready: see the daemon's log."]
    chain = " → ".join(f"`{p.name}` {p.ready - p.started:.2f} s" for p in path)
    return [
        f"Per-program times from the median run. Critical path: process start to the first "
        f"`compiling` line {path[0].started:.2f} s; then {chain} in one worker slot; the last "
        f"program ready at {path[-1].ready:.2f} s; first complete scrape at "
        f"{start.complete:.2f} s.",
        "*worker + attach* is a program's time from `compiling` to `ready` outside the BCC "
        "compile itself: starting the worker (a Python that imports `bcc`), loading, attaching "
        "and handing the fds over.",
    ]
