"""The command line's flags: parsed before anything heavy is imported, so that the spawner can
start compiling while the server imports the rest (exporter.daemon.begin)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import __version__, capabilities
from .metrics import MAX_SERIES
from .privsep.selection import BUILTIN_DIR

DEFAULT_PORT = 9474
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def parse_duration(text: str) -> float:
    """`5s`, `500ms`, `2m` or plain seconds (snapshot's --duration)."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 5s, 500ms, 2m)")
    return float(found.group(1)) * _UNITS[found.group(2)]


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
        help=f"directory of program configs (default: built-in {BUILTIN_DIR})",
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
        help="programs compiled at once, each ~45-130 MB beside one shared bcc import "
        "(default: one per CPU this process may use, at most 2, and no more than half the "
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
