"""Command line: wires config -> loader -> metrics -> server. The only place that exits.

Light to import: the spawner starts compiling (daemon.begin) as soon as the flags are parsed,
and what only the web config, serving, snapshot and list need is imported after it, where they
are used, so that those imports overlap its work (issue 18)."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import daemon
from .arguments import parse_args, parse_duration
from .errors import ConfigError
from .privsep import drop
from .privsep.client import PrivsepError, Spawner
from .signals import Signals

if TYPE_CHECKING:
    from .http.web_config import WebConfig
    from .metrics.self_metrics import ExporterCollector
    from .supervisor import Supervisor

log = logging.getLogger("bcc_exporter")

EXIT_CONFIG = 2


def setup_logging(level: str) -> None:
    logging.addLevelName(logging.WARNING, "WARN")
    logging.basicConfig(
        level={"warn": logging.WARNING}.get(level, level.upper()),
        format="%(asctime)s %(levelname)-5s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None, signals: Signals | None = None) -> int:
    if signals is None:  # not started through exporter.launch (tests)
        signals = Signals()
        signals.install()
    return _main(argv, signals)


def _main(argv: list[str] | None, signals: Signals) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        web = load_web_config(args.web_config_file) if args.web_config_file else None
        options = start_options(args)
        seconds = parse_duration(args.duration) if args.command == "snapshot" else 0.0
    except (ConfigError, drop.DropError) as err:
        print(f"bcc_exporter: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as err:
        print(f"bcc_exporter: --duration: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "list":
        return list_programs(options)
    listener = None
    if args.command == "serve" and not args.config_check:
        try:
            # Bound before loading, so a taken port fails in a second, not after every compile.
            listener = bind(args.listen)
        except OSError as err:
            print(f"bcc_exporter: cannot listen on {args.listen}: {err.strerror}", file=sys.stderr)
            return 1
    try:
        return run(args, signals, options, web, seconds, listener)
    finally:
        if listener is not None:
            listener.close()  # served and closed already, or the start failed


def run(
    args: argparse.Namespace,
    signals: Signals,
    options: daemon.StartOptions,
    web: WebConfig | None,
    seconds: float,
    listener: socket.socket | None,
) -> int:
    """Start the programs, then serve them, check them or snapshot one."""
    try:
        beginning = daemon.begin(options)
    except PrivsepError as err:
        print(f"bcc_exporter: {err} (--no-privilege-separation to run without)", file=sys.stderr)
        return 1
    try:
        if listener is not None:
            # Serving's imports (uvicorn, the ASGI app) while the spawner compiles, not after.
            from . import http  # noqa: F401
    except BaseException:  # Stop (SIGTERM during start-up) included
        beginning.close()
        raise
    try:
        running = daemon.start(beginning, check_headers=listener is not None)
    except ConfigError as err:
        print(f"bcc_exporter: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except (PrivsepError, drop.DropError) as err:
        print(f"bcc_exporter: {err} (--no-privilege-separation to run without)", file=sys.stderr)
        return 1
    try:
        if args.command == "snapshot":
            return snapshot(running, seconds)
        if args.config_check:
            return report_check(running.supervisor)
        assert listener is not None
        signals.serving(running.supervisor.reload)
        lifecycle = running.supervisor.reload if args.enable_lifecycle else None
        serve(running.exporter, listener, args.telemetry_path, web, lifecycle)
        log.info("stopped; every program detached")
        return 0
    finally:
        running.close()


def load_web_config(path: Path) -> WebConfig | None:
    """Read before anything starts, so a bad one fails first; imported only when given: the
    HTTP front is otherwise imported while the spawner compiles (see the module's docstring)."""
    from .http import web_config

    return web_config.load(path)


def start_options(args: argparse.Namespace, compile: bool = True) -> daemon.StartOptions:
    names = tuple(n for n in (args.config_names or "").split(",") if n)
    identity = None
    if args.privilege_separation:
        identity = drop.Identity.lookup(args.user, args.group)
    return daemon.StartOptions(
        spawner=daemon.spawner_options(
            python=args.loader_python,
            timeout=args.loader_timeout,
            jobs=args.loader_jobs,
            compile=compile and args.command != "list",
            config_dir=str(args.config_dir) if args.config_dir else None,
            names=names,
            files=tuple(str(f) for f in args.config_files),
            # list and snapshot look at every built-in program, the ones off by default too.
            every_builtin=args.command != "serve",
            only=args.program if args.command == "snapshot" else None,
            insecure=args.allow_insecure_permissions,
        ),
        identity=identity,
        keep=args.capabilities_keep,
        bpf_stats=args.bpf_stats,
        max_series=args.max_series,
    )


def list_programs(options: daemon.StartOptions) -> int:
    """The config as the spawner reads it, without compiling, and what this kernel has."""
    from . import listing, loader

    spawner = Spawner.start(options.spawner)
    try:
        spawner.ready()
        specs = loader.load(spawner).specs
    except ConfigError as err:
        print(f"bcc_exporter: {err}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        spawner.close()
    print(listing.describe(specs), end="")
    return 0


def snapshot(running: daemon.Daemon, seconds: float) -> int:
    """Watch one program, print what it saw the way bcc-tools (or bpftrace) do."""
    from .snapshot import report, samples

    supervisor = running.supervisor
    if supervisor.failed:
        [(_, error)] = supervisor.failed.values()
        print(f"bcc_exporter: {error}", file=sys.stderr)
        return 1
    [collector] = supervisor.running.values()
    before = samples(collector.collect())
    log.info('snapshot: watching program "%s" for %g s', collector.program.name, seconds)
    time.sleep(seconds)
    print(report(collector.program.spec.program, list(collector.collect()), before), end="")
    return 0


def report_check(supervisor: Supervisor) -> int:
    for name in sorted(supervisor.running):
        print(f"OK   {name}")
    for name, (_, err) in sorted(supervisor.failed.items()):
        print(f"FAIL {name}: {err.reason}")
    return 1 if supervisor.failed else 0


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
    web: WebConfig | None = None,
    reload: Callable[[], str | None] | None = None,
) -> None:
    from prometheus_client import CollectorRegistry, ProcessCollector

    from .http import App
    from .http import serve as serve_http

    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    ProcessCollector(registry=registry)
    host, port = listener.getsockname()[:2]
    log.info("serving %s on %s:%d", telemetry_path, host, port)
    if web is not None:
        log.info("web config %s: %s", web.path, web.summary)
    serve_http(App(registry, exporter, telemetry_path, reload), listener, web)


if __name__ == "__main__":
    sys.exit(main())
