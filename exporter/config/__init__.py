"""Config stage: YAML files -> ProgramSpecs; errors name the file, the program and the field."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from . import v1
from .models import ConfigFile, Program

# The repository's config/, reached through the exporter/builtin/config link that a wheel
# carries as package data (resolved: messages name the real files of an editable install).
BUILTIN_DIR = Path(str(resources.files("exporter") / "builtin" / "config")).resolve()


@dataclass(frozen=True)
class ProgramSpec:
    program: Program
    code: str
    origin: Path

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def digest(self) -> str:
        """Identity of the definition: equal digests mean a reload may keep the loaded program."""
        # self.code is the text either way: inline code and a source file holding it digest alike.
        blob = self.program.model_dump_json(exclude={"source", "code"}) + "\0" + self.code
        return hashlib.sha256(blob.encode()).hexdigest()


def select(
    config_dir: Path | None, names: Sequence[str] | None, files: Sequence[Path]
) -> list[ProgramSpec]:
    """The programs --config.dir/--config.names/--config.file name. With none of them: the
    built-in default set, every built-in program not marked `default: false`."""
    specs = load(config_paths(config_dir, names, files))
    if config_dir is None and not names and not files:
        specs = [spec for spec in specs if spec.program.default]
        if not specs:
            raise ConfigError(
                f"{BUILTIN_DIR}: every built-in program is marked `default: false`: "
                "name the ones to run with --config.names"
            )
    return specs


def check_permissions(specs: Iterable[ProgramSpec]) -> None:
    """Config files and program sources are code for the kernel: refuse the ones another user
    could have changed (group- or world-writable, or owned by someone but root or us)."""
    for spec in specs:
        files = [spec.origin]
        if spec.program.source is not None:
            files.append((spec.origin.parent / spec.program.source).resolve())
        for path in files:
            problem = _untrusted(path)
            if problem:
                raise ConfigError(
                    f'{path}: program "{spec.name}": {problem}; fix it (chmod go-w / chown) or '
                    "pass --config.allow-insecure-permissions"
                )


def _untrusted(path: Path) -> str | None:
    info = path.stat()
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by {'group' if info.st_mode & stat.S_IWGRP else 'others'}"
    if info.st_uid not in (0, os.geteuid()):
        return f"owned by uid {info.st_uid}, neither root nor this daemon's user"
    return None


def config_paths(
    config_dir: Path | None, names: Sequence[str] | None, files: Sequence[Path]
) -> list[Path]:
    """Resolve --config.dir/--config.names/--config.file into files, in the order given."""
    paths = list(files)
    if config_dir is not None or names or not files:
        directory = config_dir or BUILTIN_DIR
        for name in names or _all_names(directory):
            paths.append(directory / f"{name}.yaml")
    return paths


def _all_names(directory: Path) -> list[str]:
    """Every config of the directory; none is an error: a daemon checking or serving nothing
    would pass for a working one."""
    names = sorted(p.stem for p in directory.glob("*.yaml"))
    if not names:
        what = "no such directory" if not directory.is_dir() else "no *.yaml config in it"
        raise ConfigError(f"{directory}: no programs to run: {what}")
    return names


def load(paths: Iterable[Path]) -> list[ProgramSpec]:
    specs: list[ProgramSpec] = []
    seen: dict[str, Path] = {}
    for path in paths:
        for spec in load_file(path):
            if spec.name in seen:
                raise ConfigError(
                    f'{path}: program "{spec.name}": name: already defined in {seen[spec.name]}'
                )
            seen[spec.name] = path
            specs.append(spec)
    return specs


def load_file(path: Path) -> list[ProgramSpec]:
    raw = _read_yaml(path)
    if v1.is_v1(raw):
        raw = _from_v1(path, raw)
    try:
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(path, raw, err)) from None
    return [ProgramSpec(p, _code(path, p), path) for p in parsed.programs]


def _from_v1(path: Path, raw: Any) -> dict[str, Any]:
    """Validate an ebpf_exporter v1 file in its own terms; return its native equivalent."""
    try:
        parsed = v1.V1File.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(path, raw, err)) from None
    programs = []
    for program in parsed.programs:
        try:
            programs.append(v1.to_native(program))
        except ValueError as err:
            raise ConfigError(f'{path}: program "{program.name}": {err}') from None
    return {"programs": programs}


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config: {_reason(err)}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, IndexError, OverflowError) as err:
        # PyYAML's constructors raise these for tagged scalars they cannot convert (!!int x).
        raise ConfigError(f"{path}: invalid YAML: {type(err).__name__}: {err}") from None


def _code(path: Path, program: Program) -> str:
    if program.code is not None:
        return program.code
    assert program.source is not None
    # Relative to the config file, as Prometheus resolves rule_files.
    source = path.parent / program.source
    try:
        source = source.resolve()
        if source.is_char_device() or source.is_block_device() or source.is_fifo():
            raise OSError(0, "not a regular file")  # /dev/zero would be read forever
        return source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(
            f'{path}: program "{program.name}": source: cannot read {source}: {_reason(err)}'
        ) from None


def _reason(err: OSError | UnicodeDecodeError | ValueError) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 (byte {err.start})"
    if isinstance(err, OSError):
        return str(err.strerror)
    return str(err)  # e.g. "embedded null byte" in the path


def format_validation_error(path: Path, raw: Any, err: ValidationError) -> str:
    """One line per problem: `file: program "x": metrics.histograms[0].bucket_type: message`."""
    lines = []
    for problem in err.errors():
        loc = list(problem["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "programs" and isinstance(loc[1], int):
            where = f"{_program_label(raw, loc[1])}: "
            loc = loc[2:]
        message = _message(problem)
        if problem["type"] == "value_error":
            # A model validator names the field it rejects first: "bucket_max: required ...".
            head, sep, rest = message.partition(": ")
            if sep and re.fullmatch(r"[a-z][a-z0-9_]*", head):
                loc, message = [*loc, head], rest
        field = _dotted(loc)
        lines.append(f"{path}: {where}{field + ': ' if field else ''}{message}")
    return "\n".join(lines)


def _program_label(raw: Any, index: int) -> str:
    try:
        name = raw["programs"][index]["name"]
    except (KeyError, IndexError, TypeError):
        name = None
    return f'program "{name}"' if isinstance(name, str) else f"programs[{index}]"


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-") and part not in ("str", "list[...]"):
            out += f".{part}" if out else str(part)
    return out


def _message(problem: Any) -> str:
    kind = problem["type"]
    if kind == "literal_error":
        expected = problem["ctx"]["expected"].replace("'", "")
        return f"must be one of {expected.replace(' or ', ', ')} (got {problem['input']!r})"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required"
    if kind in ("model_type", "dict_type"):
        got = "nothing" if problem["input"] is None else type(problem["input"]).__name__
        return f"must be a mapping (got {got})"
    message = str(problem["msg"])
    return message.removeprefix("Value error, ")
