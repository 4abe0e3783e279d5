"""Command line: wires config -> loader -> metrics -> server. The only place that exits."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector

from . import __version__, capabilities, config, daemon, listing, loader
from .errors import ConfigError
from .http import App, web_config
from .http import serve as serve_http
from .metrics.program import MAX_SERIES
from .metrics.self_metrics import ExporterCollector
from .privsep import drop
from .privsep.client import PrivsepError, Spawner
from .signals import Signals
from .snapshot import parse_duration, report, samples
from .supervisor import Supervisor

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
        "it saw, bcc-tools style (a bpftrace program: its maps, as bpftrace prints them)",
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
        help="programs compiled at once, each ~60-130 MB beside one shared bcc import "
        "(default: one per CPU this process may use, at most 4, and no more than half the "
        "available memory, the cgroup's included, can hold)",
    )
    p.add_argument(
        "--privilege-separation",
        dest="privilege_separation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile programs in workers started by a small privileged process, and serve "
        "as --user/--group without capabilities (default on; --no-privilege-separation keeps "
        "the serving process's user and every capability, for debugging)",
    )
    p.add_argument(
        "--user",
        default="nobody",
        help="user the serving process runs as once started as root (default %(default)s); "
        "a daemon started as another user keeps it",
    )
    p.add_argument(
        "--group",
        default="nogroup",
        help="group the serving process runs as once started as root (default %(default)s)",
    )
    p.add_argument(
        "--capabilities.keep",
        dest="capabilities_keep",
        type=_capability_names,
        default=frozenset(),
        help="comma-separated capabilities the serving process keeps across its change to "
        "--user, e.g. CAP_NET_BIND_SERVICE (default: none)",
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


def main(argv: list[str] | None = None, signals: Signals | None = None) -> int:
    if signals is None:  # not started through exporter.launch (tests)
        signals = Signals()
        signals.install()
    return _main(argv, signals)


def _main(argv: list[str] | None, signals: Signals) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        web = web_config.load(args.web_config_file)
        options = start_options(args)
    except (ConfigError, drop.DropError) as err:
        print(f"bcc_exporter: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "list":
        return list_programs(options)
    if args.command == "snapshot":
        try:
            seconds = parse_duration(args.duration)
        except ValueError as err:
            print(f"bcc_exporter: --duration: {err}", file=sys.stderr)
            return EXIT_CONFIG
    listener = None
    if args.command == "serve" and not args.config_check:
        try:
            # Bound before loading, so a taken port fails in a second, not after every compile.
            listener = bind(args.listen)
        except OSError as err:
            print(f"bcc_exporter: cannot listen on {args.listen}: {err.strerror}", file=sys.stderr)
            return 1
    try:
        running = daemon.start(options, check_headers=listener is not None)
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
    spawner = Spawner.start(options.spawner)
    try:
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
    serve_http(App(registry, exporter, telemetry_path, reload), listener, web)


if __name__ == "__main__":
    sys.exit(main())
