"""Which programs a command runs: the files its config flags name, read by the spawner
(safe_files), validated by a config worker (exporter.config.worker: the one config model),
and turned into what the server is told (ProgramDescription) and what compiles (CompileJob).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TypeVar

from ..workers import runner
from ..workers.messages import (
    CompileJob,
    MessageError,
    ProgramConfig,
    ProgramDescription,
    program_digest,
)
from . import safe_files

T = TypeVar("T")
# The repository's config/, reached through the exporter/builtin/config link that a wheel
# carries as package data (resolved: messages name the real files of an editable install).
BUILTIN_DIR = Path(str(resources.files("exporter") / "builtin" / "config")).resolve()
CONFIG_WORKER = "exporter.config.worker"
CONFIG_TIMEOUT = 60.0
INSECURE_FLAG = "--config.allow-insecure-permissions"
INSECURE_HINT = "fix it (chmod go-w / chown) or pass --config.allow-insecure-permissions"


class SelectionError(Exception):
    """The config cannot be used; the message names the file (and program, and field)."""


@dataclass(frozen=True)
class Settings:
    """Fixed when the spawner starts, by the command that started it."""

    builtin_dir: str
    config_dir: str | None = None
    names: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    every_builtin: bool = False  # list and snapshot see the built-ins off by default too
    only: str | None = None  # snapshot NAME
    insecure: bool = False  # --config.allow-insecure-permissions

    def to_args(self) -> list[str]:
        args = ["--builtin-dir", self.builtin_dir]
        if self.config_dir:
            args += ["--config-dir", self.config_dir]
        for name in self.names:
            args += ["--name", name]
        for file in self.files:
            args += ["--file", file]
        if self.every_builtin:
            args.append("--every-builtin")
        if self.only:
            args += ["--only", self.only]
        if self.insecure:
            args.append("--insecure")
        return args


def config_paths(
    config_dir: str | None,
    names: Sequence[str],
    files: Sequence[str],
    builtin_dir: str,
    listdir: Callable[[str], list[str]] = os.listdir,
) -> list[str]:
    """--config.dir/--config.names/--config.file as files, in the order given: the files,
    then the named (or every *.yaml) file of the directory (the built-in one by default)."""
    paths = list(files)
    if config_dir is not None or names or not files:
        directory = config_dir or builtin_dir
        for name in names or _every_config(directory, listdir):
            paths.append(os.path.join(directory, f"{name}.yaml"))
    return paths


def _every_config(directory: str, listdir: Callable[[str], list[str]]) -> list[str]:
    """Every config of the directory; none is an error: a daemon checking or serving nothing
    would pass for a working one."""
    try:
        found = sorted(n[: -len(".yaml")] for n in listdir(directory) if n.endswith(".yaml"))
    except (FileNotFoundError, NotADirectoryError):
        found, what = [], "no such directory"
    else:
        what = "no *.yaml config in it"
    if not found:
        raise SelectionError(f"{directory}: no programs to run: {what}")
    return found


def all_off_by_default(builtin_dir: str) -> str:
    return (
        f"{builtin_dir}: every built-in program is marked `default: false`: "
        "name the ones to run with --config.names"
    )


def default_only(config_dir: bool, names: bool, files: bool) -> bool:
    """With no config flag at all, the built-in default set: programs not `default: false`."""
    return not (config_dir or names or files)


def read(settings: Settings, python: str) -> list[tuple[ProgramDescription, CompileJob]]:
    """The programs the settings select, as they are on disk now."""

    def listdir(directory: str) -> list[str]:
        # A missing directory is "no programs to run" (config_paths), not a read error.
        if not os.path.isdir(directory):
            raise FileNotFoundError(directory)
        return _guarded(directory, partial(safe_files.listdir, directory, settings.insecure))

    paths = config_paths(
        settings.config_dir, settings.names, settings.files, settings.builtin_dir, listdir
    )
    texts = []
    for path in paths:
        data = _guarded(path, partial(safe_files.read, path, settings.insecure))
        texts.append({"path": path, "text": _text(path, data)})
    programs = _validate(texts, python, settings.insecure)
    flags = (settings.config_dir is not None, bool(settings.names), bool(settings.files))
    if default_only(*flags) and not settings.every_builtin:
        programs = [p for p in programs if p.default]
        if not programs:
            raise SelectionError(all_off_by_default(settings.builtin_dir))
    if settings.only is not None:
        chosen = [p for p in programs if p.name == settings.only]
        if not chosen:
            known = ", ".join(p.name for p in programs)
            raise SelectionError(f"no program {settings.only!r} (known: {known})")
        programs = chosen
    return [_described(p, settings.insecure) for p in programs]


def _guarded(path: str, action: Callable[[], T]) -> T:
    try:
        return action()
    except safe_files.UnsafePath as err:
        raise SelectionError(f"{path}: refusing it: {err}; {INSECURE_HINT}") from None
    except OSError as err:
        raise SelectionError(f"{path}: cannot read: {err.strerror}") from None


def _text(path: str, data: bytes, program: str | None = None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        where = f'program "{program}": source: ' if program else "cannot read config: "
        raise SelectionError(f"{path}: {where}not UTF-8 (byte {err.start})") from None


def _described(config: ProgramConfig, insecure: bool) -> tuple[ProgramDescription, CompileJob]:
    code = config.code
    if code is None:
        assert config.source is not None
        try:
            data = safe_files.read(config.source, insecure)
        except safe_files.UnsafePath as err:
            raise SelectionError(
                f'{config.origin}: program "{config.name}": source: refusing it: {err}; '
                f"{INSECURE_HINT}"
            ) from None
        except OSError as err:
            raise SelectionError(
                f'{config.origin}: program "{config.name}": source: cannot read '
                f"{config.source}: {err.strerror}"
            ) from None
        code = _text(config.origin, data, config.name)
    if not insecure:
        _check_include_dirs(config)
    digest = program_digest(config.model, code)
    description = ProgramDescription(config.name, config.origin, digest, config.model, code)
    return description, CompileJob(config.name, code, config.settings)


def _check_include_dirs(config: ProgramConfig) -> None:
    """An -I directory is code as much as the config: it must be as safe as the config's."""
    for flag in config.settings.cflags:
        if flag.startswith("-I"):
            directory = flag[2:]
            try:
                safe_files.listdir(directory)
            except safe_files.UnsafePath as err:
                raise SelectionError(
                    f'{config.origin}: program "{config.name}": cflags: {flag}: refusing it: '
                    f"{err}; {INSECURE_HINT}"
                ) from None
            except OSError as err:
                raise SelectionError(
                    f'{config.origin}: program "{config.name}": cflags: {flag}: {err.strerror}'
                ) from None


def _validate(texts: list[dict[str, str]], python: str, insecure: bool) -> list[ProgramConfig]:
    """The config worker's verdict on the files' text: their programs, or why not."""
    try:
        done = subprocess.run(
            # The worker reads .bt sources itself: it translates them as it validates.
            runner.command(python, CONFIG_WORKER, *([INSECURE_FLAG] if insecure else [])),
            input=json.dumps(texts).encode(),
            capture_output=True,
            cwd="/",
            env=runner.environment(),
            timeout=CONFIG_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SelectionError(f"cannot run the config worker: {err}") from None
    try:
        answer = json.loads(done.stdout)
        if "error" in answer:
            raise SelectionError(str(answer["error"]))
        return [ProgramConfig.from_json(p) for p in answer["programs"]]
    except (ValueError, KeyError, TypeError, MessageError) as err:
        if isinstance(err, SelectionError):
            raise
        said = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise SelectionError(
            f"the config worker failed (status {done.returncode}): {' | '.join(said) or err}"
        ) from None
