"""Config stage: YAML files -> ProgramSpecs; errors name the file, the program and the field."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..bpftrace.diagnostics import Origin
from ..errors import ConfigError, LoadError
from ..privsep import safe_files, selection
from ..privsep.selection import BUILTIN_DIR
from ..workers.messages import (
    CompileSettings,
    ProbeBinding,
    ProgramConfig,
    ProgramDescription,
    program_digest,
)
from . import v1
from .models import ConfigFile, Program

# Reads a program source's bytes (an absolute path); the config worker's checks who could
# have written it, as the spawner's do for C sources.
ReadSource = Callable[[str], bytes]


def _read_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


@dataclass(frozen=True)
class ProgramSpec:
    """A program as the server runs it: its validated config, code, file and digest."""

    program: Program
    code: str
    origin: Path
    digest: str

    @property
    def name(self) -> str:
        return self.program.name

    @classmethod
    def of(cls, program: Program, code: str, origin: Path) -> ProgramSpec:
        return cls(program, code, origin, program_digest(_model(program), code))

    @classmethod
    def described(cls, d: ProgramDescription) -> ProgramSpec:
        """The program the privileged spawner read and validated (trusted as it is)."""
        return cls(Program.model_validate(d.model), d.code, Path(d.origin), d.digest)


def _model(program: Program) -> dict[str, Any]:
    return program.model_dump(mode="json")


def select(
    config_dir: Path | None, names: Sequence[str] | None, files: Sequence[Path]
) -> list[ProgramSpec]:
    """The programs --config.dir/--config.names/--config.file name, as the spawner selects
    them (without its permission checks): for tests and tools that read configs."""
    try:
        paths = selection.config_paths(
            str(config_dir) if config_dir else None,
            names or (),
            [str(f) for f in files],
            str(BUILTIN_DIR),
        )
    except selection.SelectionError as err:
        raise ConfigError(str(err)) from None
    specs = load(map(Path, paths))
    if selection.default_only(config_dir is not None, bool(names), bool(files)):
        specs = [spec for spec in specs if spec.program.default]
        if not specs:
            raise ConfigError(selection.all_off_by_default(str(BUILTIN_DIR)))
    return specs


def load(paths: Iterable[Path]) -> list[ProgramSpec]:
    """Config files and their programs' sources, read as they are (tests and tools; the daemon
    reads them through the spawner, which checks who could have written them)."""
    texts = ((path, _read(path)) for path in paths)
    return [ProgramSpec.of(p, _code(path, p), path) for path, p in parse_all(texts)]


def load_file(path: Path) -> list[ProgramSpec]:
    return load([path])


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config: {_reason(err)}") from None


def read_yaml(path: Path) -> Any:
    """A YAML file (the web config) as data; ConfigError naming the file and line."""
    return _parse_yaml(path, _read(path))


def parse_all(
    texts: Iterable[tuple[Path, str]], read: ReadSource = _read_bytes
) -> list[tuple[Path, Program]]:
    """The programs of config files' text, each name defined once; `read` reads the
    bpftrace scripts of `.bt` sources (the config worker reads them as the spawner reads C)."""
    found: list[tuple[Path, Program]] = []
    seen: dict[str, Path] = {}
    for path, text in texts:
        for program in parse(path, text, read):
            if program.name in seen:
                raise ConfigError(
                    f'{path}: program "{program.name}": name: already defined in '
                    f"{seen[program.name]}"
                )
            seen[program.name] = path
            found.append((path, program))
    _check_metric_names(found)
    return found


def _check_metric_names(found: list[tuple[Path, Program]]) -> None:
    """Two programs must not export the same metric (a bpftrace map named like another
    program's metric): the scrape would carry the family twice."""
    owners: dict[str, tuple[Path, str]] = {}
    for path, program in found:
        for metric in program.metrics.all():
            full = f"{program.namespace}_{metric.name}".removesuffix("_total")
            other = owners.setdefault(full, (path, program.name))
            if other[1] != program.name:
                raise ConfigError(
                    f'{path}: program "{program.name}": metric {program.namespace}_'
                    f'{metric.name}: also exported by program "{other[1]}" ({other[0]})'
                )


def parse(path: Path, text: str, read: ReadSource = _read_bytes) -> list[Program]:
    """The programs of one config file's text (native or ebpf_exporter v1), validated by the
    model and, for each metric, its label layout and decoder chain; ConfigError otherwise."""
    raw = _parse_yaml(path, text)
    raw = _from_v1(path, raw) if v1.is_v1(raw) else _from_bpftrace(path, text, raw, read)
    try:
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(path, raw, err)) from None
    for program in parsed.programs:
        _check_layouts(path, program)
    return parsed.programs


def _check_layouts(path: Path, program: Program) -> None:
    from ..metrics.labels import layout  # the decoders: only for a config being read

    for kind in ("counters", "gauges", "histograms"):
        for index, metric in enumerate(getattr(program.metrics, kind)):
            try:
                layout(program.name, f"metrics.{kind}[{index}]", metric)
            except LoadError as err:
                raise ConfigError(f"{path}: {err}") from None


def program_config(path: Path, program: Program) -> ProgramConfig:
    """What the spawner needs of a validated program: its compile settings, and its source
    file's absolute path (relative to the config file, as Prometheus resolves rule_files)."""
    source = None
    if program.source is not None:
        source = os.path.normpath(os.path.join(os.path.dirname(path), program.source))
    return ProgramConfig(
        name=program.name,
        origin=str(path),
        default=program.default,
        model=_model(program),
        code=program.code,
        source=source,
        settings=CompileSettings(
            cflags=tuple(program.cflags),
            probes=tuple(
                ProbeBinding(p.function, tuple(str(a) for a in p.attach)) for p in program.probes
            ),
            perf_maps=tuple(sorted({c.perf_map for c in program.metrics.counters if c.perf_map})),
            kaddrs=tuple(program.kaddrs),
            reads_kernel_structs=program.reads_kernel_structs or "",
        ),
    )


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


def _from_bpftrace(path: Path, text: str, raw: Any, read: ReadSource) -> Any:
    """The file with each bpftrace program translated into its native equivalent."""
    from ..bpftrace import config as bt

    programs = raw.get("programs") if isinstance(raw, dict) else None
    if not isinstance(programs, list) or not any(bt.is_bpftrace(p) for p in programs):
        return raw
    native = []
    for index, entry in enumerate(programs):
        if not bt.is_bpftrace(entry):
            native.append(entry)
            continue
        where = _program_label(raw, index)
        clash = bt.clashes(entry)
        if clash:
            raise ConfigError(f"{path}: {where}: {clash}")
        try:
            program = bt.BpftraceProgram.model_validate(entry)
        except ValidationError as err:
            # The entry was validated alone: its problems are located within it.
            lines = format_validation_error(path, entry, err).splitlines()
            prefix = f"{path}: "
            raise ConfigError(
                "\n".join(f"{prefix}{where}: {line.removeprefix(prefix)}" for line in lines)
            ) from None
        script, source = bt.script_of(program, path, _read_source(path, program.name, read))
        origin = _script_origin(path, text, index) if source is None else Origin(str(source))
        try:
            native.append(bt.to_native(program, script, origin))
        except bt.Diagnostic as err:
            raise ConfigError(str(err) if source is None else f"{path}: {err}") from None
        except ValueError as err:
            raise ConfigError(f"{path}: {where}: {err}") from None
    return {**raw, "programs": native}


def _read_source(path: Path, program: str, read: ReadSource) -> Callable[[Path], str]:
    def text(source: Path) -> str:
        try:
            return read(os.path.normpath(source)).decode("utf-8")
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ConfigError(
                f'{path}: program "{program}": source: cannot read {source}: {_reason(err)}'
            ) from None
        except safe_files.UnsafePath as err:
            raise ConfigError(
                f'{path}: program "{program}": source: refusing it: {err}; '
                f"{selection.INSECURE_HINT}"
            ) from None

    return text


def _script_origin(path: Path, text: str, index: int) -> Origin:
    """Where an inline script's first line is in the config file, for its diagnostics."""
    try:
        node = yaml.compose(text)
        assert node is not None
        programs = next(v for k, v in node.value if k.value == "programs")
        entry = programs.value[index]
        value = next(v for k, v in entry.value if k.value == "bpftrace")
    except (yaml.YAMLError, StopIteration, AttributeError, IndexError, TypeError, AssertionError):
        return Origin(str(path))
    mark = value.start_mark
    if value.style in ("|", ">"):  # a block scalar: its text starts on the next line
        # (leading blank lines are part of the text; the indentation is the first other's)
        lines = text.splitlines()[mark.line + 1 :]
        line = next((line for line in lines if line.strip()), "")
        return Origin(str(path), mark.line + 2, len(line) - len(line.lstrip(" ")))
    # A flow scalar: its first line's columns are the file's, but the line shown is the
    # script's (escapes and quotes undone), so positions are given within the script.
    return Origin(str(path), mark.line + 1)


def _parse_yaml(path: Path, text: str) -> Any:
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
