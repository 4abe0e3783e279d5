"""Command line: wires config -> loader -> metrics -> server. The only place that exits."""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from prometheus_client import CollectorRegistry, ProcessCollector

from . import (
    __version__,
    capabilities,
    config,
    headers,
    listing,
    loader,
    memory,
    privsep,
    server,
    web_config,
)
from .bpf.syscall import BPFError, enable_stats
from .errors import ConfigError, LoadError
from .metrics.program import MAX_SERIES, ProgramCollector
from .metrics.self_metrics import ExporterCollector
from .server import App
from .snapshot import parse_duration, render, samples
from .supervisor import Supervisor, close_all, start_all
from .tracefs import ensure_mounted

log = logging.getLogger("bcc_exporter")

DEFAULT_PORT = 9474
EXIT_CONFIG = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bcc_exporter",
        description="Compile BPF programs with BCC and serve their maps as Prometheus metrics.",
    )
    p.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "list", "snapshot"],
        help="serve (default): run the exporter; list: every program, its probes and whether "
        "this kernel has them; snapshot NAME: run one program for --duration and print what "
        "it saw, bcc-tools style",
    )
    p.add_argument("program", nargs="?", help="the program, for snapshot")
    p.add_argument(
        "--duration", default="5s", help="how long snapshot watches (default %(default)s)"
    )
    p.add_argument(
        "--config.dir",
        dest="config_dir",
        type=Path,
        help=f"directory of program configs (default: built-in {config.BUILTIN_DIR})",
    )
    p.add_argument(
        "--config.names",
        dest="config_names",
        help="comma-separated config names in --config.dir (default: every file of "
        "--config.dir; with no config flag at all, the built-in programs not marked "
        "default: false)",
    )
    p.add_argument(
        "--config.file",
        dest="config_files",
        type=Path,
        action="append",
        default=[],
        help="a config file (repeatable)",
    )
    p.add_argument(
        "--config.allow-insecure-permissions",
        dest="allow_insecure_permissions",
        action="store_true",
        help="load config files and program sources that are group- or world-writable or "
        "owned by another user (refused by default: they are code for the kernel)",
    )
    p.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="compile and attach every program, report each, detach and exit 0/1",
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        default=f":{DEFAULT_PORT}",
        help="address to serve on (default :%(default)s)".replace("%(default)s", str(DEFAULT_PORT)),
    )
    p.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        help="path of the metrics endpoint (default %(default)s)",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        help="TLS, basic auth and response headers, in Prometheus exporter-toolkit's "
        "web config format",
    )
    p.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="serve POST/PUT /-/reload (reload the config, as SIGHUP does)",
    )
    p.add_argument(
        "--metrics.max-series",
        dest="max_series",
        type=int,
        default=MAX_SERIES,
        help="series one metric may export; past it, new series are dropped and counted in "
        "bcc_exporter_series_dropped_total (default %(default)s)",
    )
    p.add_argument(
        "--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"]
    )
    p.add_argument(
        "--loader.python",
        dest="loader_python",
        default=sys.executable,
        help="interpreter that runs compile workers; must import bcc "
        "(default: this one, %(default)s)",
    )
    p.add_argument(
        "--loader.timeout",
        dest="loader_timeout",
        type=float,
        default=120.0,
        help="seconds one program's compile may take (default %(default)s)",
    )
    p.add_argument(
        "--bpf.stats",
        dest="bpf_stats",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="turn on the kernel's BPF run-time statistics while the daemon runs, for "
        "bcc_exporter_program_run_count_total and _run_seconds_total (off by default: they "
        "cost ~35 ns on every run of every BPF program of the node, ours and others'; needs "
        "CAP_SYS_ADMIN)",
    )
    p.add_argument(
        "--loader.jobs",
        dest="loader_jobs",
        type=int,
        default=None,
        help="compile workers run at once, each ~170-200 MB while it compiles "
        "(default: one per CPU of the machine, which a container's CPU limit does not lower)",
    )
    p.add_argument(
        "--privilege-separation",
        dest="privilege_separation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile programs in workers started by a small privileged process, and serve "
        "from a process without capabilities (default on; --no-privilege-separation keeps "
        "every capability in the serving process, for debugging)",
    )
    p.add_argument(
        "--capabilities.keep",
        dest="capabilities_keep",
        type=_capability_names,
        default=frozenset(),
        help="comma-separated capabilities the serving process keeps, e.g. "
        "CAP_NET_BIND_SERVICE (default: none)",
    )
    p.add_argument("--version", action="version", version=f"bcc_exporter {__version__}")
    args = p.parse_args(argv)
    if args.command == "snapshot" and not args.program:
        p.error("snapshot needs the name of a program")
    if args.command != "snapshot" and args.program:
        p.error(f"unexpected argument {args.program!r}")
    if args.capabilities_keep and not args.privilege_separation:
        p.error("--capabilities.keep: without privilege separation every capability is kept")
    return args


def _capability_names(text: str) -> frozenset[int]:
    try:
        return capabilities.parse(text)
    except capabilities.CapabilityError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def setup_logging(level: str) -> None:
    logging.addLevelName(logging.WARNING, "WARN")
    logging.basicConfig(
        level={"warn": logging.WARNING}.get(level, level.upper()),
        format="%(asctime)s %(levelname)-5s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        specs = select(args)
        web = web_config.load(args.web_config_file)
    except ConfigError as err:
        print(f"bcc_exporter: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "list":
        print(listing.describe(specs), end="")
        return 0
    worker = loader.Worker(python=args.loader_python, timeout=args.loader_timeout)
    headers.use_fallback()  # before any worker starts: they inherit the choice
    memory.keep_mmap_threshold()
    if args.command == "snapshot":
        return snapshot(args, specs, worker)
    if args.config_check:
        ensure_mounted()
        collectors, failed, _ = start_all(specs, worker, jobs=args.loader_jobs)
        return report_check(collectors, failed)
    try:
        # Bound before loading, so a taken port fails in a second, not after every compile.
        listener = bind(args.listen)
    except OSError as err:
        print(f"bcc_exporter: cannot listen on {args.listen}: {err.strerror}", file=sys.stderr)
        return 1
    # Every program holds fds, and so does every open connection: systemd's soft default of
    # 1024 would be reached by ~1000 clients connecting within the 5 s a request head may
    # take (exporter.server.REQUEST_HEAD_SECONDS).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ensure_mounted()
    # Held for the daemon's life: the kernel counts programs' run time only while it is open.
    stats_fd = _enable_stats() if args.bpf_stats else None
    spawner = None
    if args.privilege_separation:
        try:
            # Last step with privileges: from here on this process holds fds and serves.
            spawner = privsep.separate(worker.python, worker.timeout, args.capabilities_keep)
        except privsep.PrivsepError as err:
            print(
                f"bcc_exporter: {err} (--no-privilege-separation to run without)", file=sys.stderr
            )
            return 1
    exporter = ExporterCollector()
    # The spawner has Worker.run's contract: it runs the same worker, from the privileged side.
    runner = cast(loader.Worker, spawner) if spawner is not None else worker
    supervisor = Supervisor(
        runner, exporter, lambda: select(args), args.max_series, args.loader_jobs
    )
    supervisor.start(specs)
    memory.release()  # what loading freed
    # A reload compiles in workers for seconds: never in the signal handler's frame.
    signal.signal(
        signal.SIGHUP, lambda *_: threading.Thread(target=supervisor.reload, name="reload").start()
    )
    try:
        lifecycle = supervisor.reload if args.enable_lifecycle else None
        serve(exporter, listener, args.telemetry_path, web, lifecycle)
    finally:
        supervisor.close()
        if spawner is not None:
            spawner.close()
        if stats_fd is not None:
            os.close(stats_fd)
    log.info("stopped; every program detached")
    return 0


def select(args: argparse.Namespace) -> list[config.ProgramSpec]:
    names = [n for n in (args.config_names or "").split(",") if n] or None
    if args.command == "serve" or args.config_dir or names or args.config_files:
        specs = config.select(args.config_dir, names, args.config_files)
    else:
        # list and snapshot look at every built-in program, the ones off by default included.
        specs = config.load(config.config_paths(None, None, []))
    if not args.allow_insecure_permissions:
        config.check_permissions(specs)
    return specs


def snapshot(
    args: argparse.Namespace, specs: list[config.ProgramSpec], worker: loader.Worker
) -> int:
    """Attach one program, wait, print what it saw the way bcc-tools do, detach."""
    chosen = [s for s in specs if s.name == args.program]
    if not chosen:
        known = ", ".join(s.name for s in specs)
        print(f"bcc_exporter: no program {args.program!r} (known: {known})", file=sys.stderr)
        return EXIT_CONFIG
    try:
        seconds = parse_duration(args.duration)
    except ValueError as err:
        print(f"bcc_exporter: --duration: {err}", file=sys.stderr)
        return EXIT_CONFIG
    ensure_mounted()
    collectors, failed, _ = start_all(chosen, worker, jobs=args.loader_jobs)
    if failed:
        print(f"bcc_exporter: {failed[0]}", file=sys.stderr)
        return 1
    [collector] = collectors
    try:
        before = samples(collector.collect())
        log.info('snapshot: watching program "%s" for %g s', collector.program.name, seconds)
        time.sleep(seconds)
        print(render(list(collector.collect()), before), end="")
    finally:
        collector.close()
    return 0


def _enable_stats() -> int | None:
    try:
        return enable_stats()
    except BPFError as err:
        log.warning(
            "--bpf.stats: BPF run-time stats unavailable (%s): run_count/run_seconds stay 0", err
        )
        return None


def report_check(collectors: list[ProgramCollector], failed: list[LoadError]) -> int:
    for c in collectors:
        print(f"OK   {c.program.name}")
    close_all(collectors)
    for err in failed:
        print(f"FAIL {err.program}: {err.reason}")
    return 1 if failed else 0


def bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "::"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: uvicorn writes a response's head and body apart, and
    # Nagle plus the scraper's delayed ACK would stall every keep-alive scrape by ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, int(port)))
    sock.listen(128)
    return sock


def serve(
    exporter: ExporterCollector,
    listener: socket.socket,
    telemetry_path: str,
    web: web_config.WebConfig | None = None,
    reload: Callable[[], str | None] | None = None,
) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    ProcessCollector(registry=registry)
    host, port = listener.getsockname()[:2]
    log.info("serving %s on %s:%d", telemetry_path, host, port)
    if web is not None:
        log.info("web config %s: %s", web.path, web.summary)
    server.serve(App(registry, exporter, telemetry_path, reload), listener, web)


if __name__ == "__main__":
    sys.exit(main())
