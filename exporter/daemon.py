"""The one start-up sequence of every command that starts programs (serve, --config.check,
snapshot) and of `list`, which only reads the config: so they give the same verdict on the
same config.

1. Signals first (exporter.signals, before the heavy imports): SIGHUP during start-up is
   queued (it reloads once started), SIGTERM and SIGINT stop the start-up cleanly.
2. begin(), as soon as the flags are parsed and while privileged: tracefs mounted, the fallback
   headers chosen (workers inherit it), the fd limit raised, BPF stats enabled (--bpf.stats),
   the spawner started with the command's selection (exporter.privsep) and asked for the
   programs at once. This module imports only what that needs: the server's heavy imports
   (pydantic, prometheus_client, uvicorn: ~150 ms) come after, while the spawner reads the
   config and compiles, instead of before it starts (issue 18).
3. start(): /proc/kallsyms opened, then the drop (exporter.privsep.drop): from here this
   process is an unprivileged user.
4. The programs, as the spawner answers (Supervisor.start); what the spawner holds for a
   reload is the config on disk, never anything this process says.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import capabilities, headers, kallsyms, memory
from .bpf.syscall import BPFError, enable_stats
from .privsep import drop, selection
from .privsep.client import Replies, Spawner
from .privsep.spawner import Options
from .tracefs import ensure_mounted
from .workers.messages import Reload

if TYPE_CHECKING:
    from .metrics.self_metrics import ExporterCollector
    from .supervisor import Supervisor

log = logging.getLogger("bcc_exporter")


@dataclass(frozen=True)
class StartOptions:
    spawner: Options
    identity: drop.Identity | None  # None: keep this process's privileges
    keep: frozenset[int]  # --capabilities.keep
    bpf_stats: bool
    max_series: int


def spawner_options(
    *,
    python: str,
    timeout: float,
    jobs: int | None,
    compile: bool,
    config_dir: str | None,
    names: tuple[str, ...],
    files: tuple[str, ...],
    every_builtin: bool,
    only: str | None,
    insecure: bool,
) -> Options:
    """Paths are made absolute here, before anything changes directory."""
    settings = selection.Settings(
        builtin_dir=str(selection.BUILTIN_DIR),
        config_dir=os.path.abspath(config_dir) if config_dir else None,
        names=names,
        files=tuple(os.path.abspath(f) for f in files),
        every_builtin=every_builtin,
        only=only,
        insecure=insecure,
    )
    return Options(python, timeout, jobs or 0, compile, settings)


class Daemon:
    """The programs, the spawner that compiles them, and what they hold, from start to close."""

    def __init__(self, spawner: Spawner, supervisor: Supervisor, stats_fd: int | None) -> None:
        self.spawner = spawner
        self.supervisor = supervisor
        self.stats_fd = stats_fd

    @property
    def exporter(self) -> ExporterCollector:
        return self.supervisor.exporter

    def close(self) -> None:
        self.supervisor.close()
        self.spawner.close()
        if self.stats_fd is not None:
            os.close(self.stats_fd)


@dataclass
class Beginning:
    """A start under way: the spawner started and asked for the programs, this process still
    privileged. start() takes it over; close() if the command gives up before."""

    options: StartOptions
    spawner: Spawner
    asked: Replies  # the first load's replies, as they arrive
    stats_fd: int | None

    def close(self) -> None:
        self.asked.close()
        self.spawner.close()
        if self.stats_fd is not None:
            os.close(self.stats_fd)


def begin(options: StartOptions) -> Beginning:
    """Prepare while privileged, start the spawner and ask it for the programs. Raises
    PrivsepError."""
    headers.use_fallback()  # before the spawner starts: its workers inherit the choice
    memory.keep_mmap_threshold()
    ensure_mounted()
    # Every program holds fds, and so does every open connection: systemd's soft default of
    # 1024 would be reached by ~1000 clients connecting within the 5 s a request head may
    # take (exporter.http.uvicorn_compat.REQUEST_HEAD_SECONDS).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Held for the daemon's life: the kernel counts programs' run time only while it is open.
    stats_fd = _enable_stats() if options.bpf_stats else None
    try:
        spawner = Spawner.start(options.spawner)
        try:
            return Beginning(options, spawner, spawner.ask(Reload(frozenset())), stats_fd)
        except BaseException:  # Stop (SIGTERM) included: nothing may outlive the start-up
            spawner.close()
            raise
    except BaseException:
        if stats_fd is not None:
            os.close(stats_fd)
        raise


def start(beginning: Beginning, check_headers: bool = True) -> Daemon:
    """Drop this process's privileges, take the programs as the spawner answers. Raises
    ConfigError (the config cannot be used), PrivsepError or DropError; closes `beginning`
    on any error."""
    # Here, not at the top: see the module's docstring (step 2).
    from .metrics.self_metrics import ExporterCollector
    from .supervisor import Supervisor

    options, spawner = beginning.options, beginning.spawner
    try:
        spawner.ready()
        # Whether a reader of /proc/kallsyms sees addresses is decided at open(2).
        kallsyms.hold()
        if options.identity is not None:
            kept = drop.drop(options.identity, options.keep)
            log.info(
                "privilege separation: compile workers are started by the spawner (pid %d); "
                "this process keeps %s and runs as uid %d, gid %d",
                spawner.pid,
                ", ".join(capabilities.names(kept)) or "no capabilities",
                os.getuid(),
                os.getgid(),
            )
        spawner.watch()
        supervisor = Supervisor(spawner, ExporterCollector(), options.max_series)
    except BaseException:
        beginning.close()
        raise
    daemon = Daemon(spawner, supervisor, beginning.stats_fd)
    try:
        supervisor.start(check_headers, beginning.asked)
    except BaseException:
        beginning.asked.close()
        daemon.close()
        raise
    memory.release()  # what loading freed
    return daemon


def _enable_stats() -> int | None:
    try:
        return enable_stats()
    except BPFError as err:
        log.warning(
            "--bpf.stats: BPF run-time stats unavailable (%s): run_count/run_seconds stay 0", err
        )
        return None
