"""The typed messages that cross the trust boundary, and their strict JSON forms.

Who sends what:
- server -> spawner: a Request (Reload or CheckHeaders). Nothing else exists: the server
  never sends code, cflags, paths or headers. Reload names the digests the server already
  has (running or failed unchanged), so that only what changed on disk is compiled again.
- spawner -> compile worker: CompileJob and HeaderJob, built by the spawner from config files
  it read itself and a config worker validated (ProgramConfig).
- spawner -> server: Selection (what the config on disk says now), then per compiled
  program Compiling and Loaded (with its fds) or Failed, then Done; or Refused.

Every decode_* function takes untrusted JSON and returns a message or raises MessageError.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any, TypedDict, cast

NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
DIGEST = re.compile(r"[0-9a-f]{64}")
# Compiler flags a config may give: they only define, include or tune; nothing that loads code
# (-fplugin, -Xclang -load, -mllvm) or writes files (-MF, -o, -Wp,...). The config model
# applies it when the file is read, and the compile worker's job check again.
CFLAG = re.compile(
    r"-D[a-zA-Z_][a-zA-Z0-9_]*(=.*)?|-U[a-zA-Z_][a-zA-Z0-9_]*|-I/.+|-W[a-zA-Z0-9=_-]+"
    r"|-O[0-3sz]?|-std=[\w+]+|-g"
)
CFLAG_RULE = (
    "only -DNAME[=VALUE], -UNAME, -I/ABSOLUTE/DIR, -W..., -O..., -std=..., -g, each as one flag"
)


class MessageError(ValueError):
    """JSON that is not the message it should be."""


def _fields(data: object, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(data, dict) or set(data) != keys:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise MessageError(f"{what}: an object with the keys {sorted(keys)}, not {got}")
    return data


def _names(data: object, what: str) -> tuple[str, ...]:
    if not isinstance(data, list) or not all(is_name(v) for v in data):
        raise MessageError(f"{what}: a list of C identifiers")
    return tuple(data)


def _strings(data: object, what: str) -> tuple[str, ...]:
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise MessageError(f"{what}: a list of strings")
    return tuple(data)


def _string(data: object, what: str) -> str:
    if not isinstance(data, str):
        raise MessageError(f"{what}: a string")
    return data


def is_name(value: object) -> bool:
    return isinstance(value, str) and NAME.fullmatch(value) is not None


def check_cflag(flag: str) -> None:
    if not CFLAG.fullmatch(flag):
        raise MessageError(f"cflags: {flag!r} is not allowed ({CFLAG_RULE})")


# ----------------------------------------------------------------------- what compiles


@dataclass(frozen=True)
class ProbeBinding:
    function: str
    attach: tuple[str, ...]  # alternatives, first that this kernel has wins


@dataclass(frozen=True)
class CompileSettings:
    """Everything but the code that a program's compile takes, from its validated config."""

    cflags: tuple[str, ...]
    probes: tuple[ProbeBinding, ...]
    perf_maps: tuple[str, ...]
    kaddrs: tuple[str, ...]
    reads_kernel_structs: str  # "" when it reads none

    def to_json(self) -> dict[str, Any]:
        return {
            "cflags": list(self.cflags),
            "probes": [{"function": p.function, "attach": list(p.attach)} for p in self.probes],
            "perf_maps": list(self.perf_maps),
            "kaddrs": list(self.kaddrs),
            "reads_kernel_structs": self.reads_kernel_structs,
        }

    @classmethod
    def from_json(cls, data: object) -> CompileSettings:
        d = _fields(
            data, {"cflags", "probes", "perf_maps", "kaddrs", "reads_kernel_structs"}, "job"
        )
        cflags = _strings(d["cflags"], "cflags")
        for flag in cflags:
            check_cflag(flag)
        if not isinstance(d["probes"], list):
            raise MessageError("probes: a list")
        probes = []
        for probe in d["probes"]:
            p = _fields(probe, {"function", "attach"}, "probes[]")
            attach = _strings(p["attach"], "probes[].attach")
            if not is_name(p["function"]) or not attach:
                raise MessageError("probes: each is {function: C identifier, attach: [probe, ...]}")
            probes.append(ProbeBinding(p["function"], attach))
        return cls(
            cflags=cflags,
            probes=tuple(probes),
            perf_maps=_names(d["perf_maps"], "perf_maps"),
            kaddrs=_names(d["kaddrs"], "kaddrs"),
            reads_kernel_structs=_string(d["reads_kernel_structs"], "reads_kernel_structs"),
        )


@dataclass(frozen=True)
class CompileJob:
    """One program for a compile worker: its code, as read from disk by the spawner."""

    program: str
    code: str
    settings: CompileSettings

    def to_json(self) -> dict[str, Any]:
        return {"compile": {"program": self.program, "code": self.code, **self.settings.to_json()}}


@dataclass(frozen=True)
class HeaderJob:
    """Check the kernel headers against the kernel's BTF (fields fixed by the worker)."""

    def to_json(self) -> dict[str, Any]:
        return {"headers": True}


Job = CompileJob | HeaderJob


def decode_job(data: object) -> Job:
    if data == {"headers": True}:
        return HeaderJob()
    d = _fields(data, {"compile"}, "a job")["compile"]
    if not isinstance(d, dict):
        raise MessageError("compile: an object")
    rest = {k: v for k, v in d.items() if k not in ("program", "code")}
    if not is_name(d.get("program")):
        raise MessageError("compile.program: a C identifier")
    return CompileJob(
        program=d["program"],
        code=_string(d.get("code"), "compile.code"),
        settings=CompileSettings.from_json(rest),
    )


# ----------------------------------------------------------------- config worker's answer


@dataclass(frozen=True)
class ProgramConfig:
    """One program as the config worker validated it with the config model."""

    name: str
    origin: str  # the config file that defines it
    default: bool  # in the default set
    model: dict[str, Any]  # the validated model as JSON, handed to the server as it is
    code: str | None  # inline code, or
    source: str | None  # the absolute path of its source file, which the spawner reads
    settings: CompileSettings

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "settings": self.settings.to_json()}

    @classmethod
    def from_json(cls, data: object) -> ProgramConfig:
        keys = {"name", "origin", "default", "model", "code", "source", "settings"}
        d = _fields(data, keys, "program")
        if not is_name(d["name"]) or not isinstance(d["default"], bool):
            raise MessageError("program: name and default")
        if not isinstance(d["model"], dict):
            raise MessageError("program.model: an object")
        if (d["code"] is None) == (d["source"] is None):
            raise MessageError("program: exactly one of code and source")
        return cls(
            name=d["name"],
            origin=_string(d["origin"], "origin"),
            default=d["default"],
            model=d["model"],
            code=None if d["code"] is None else _string(d["code"], "code"),
            source=None if d["source"] is None else _string(d["source"], "source"),
            settings=CompileSettings.from_json(d["settings"]),
        )


# ------------------------------------------------------------------ server <-> spawner


@dataclass(frozen=True)
class Reload:
    """Apply the config on disk; `have`: digests of programs not to compile again."""

    have: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CheckHeaders:
    """Do the kernel headers describe this kernel?"""


Request = Reload | CheckHeaders
# A program digest is 67 bytes of JSON: the largest request fits one SEQPACKET message
# (net.core.wmem_default, ~208 KiB) with room to spare.
MAX_HAVE = 2_000
MAX_REQUEST = 160_000


def encode_request(request: Request) -> bytes:
    if isinstance(request, Reload):
        if len(request.have) > MAX_HAVE:
            raise MessageError(f"reload: more than {MAX_HAVE} programs")
        return json.dumps({"reload": {"have": sorted(request.have)}}).encode()
    return json.dumps({"check_headers": {}}).encode()


def decode_request(data: bytes) -> Request:
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise MessageError(f"not JSON: {type(err).__name__}") from None
    if message == {"check_headers": {}}:
        return CheckHeaders()
    body = _fields(_fields(message, {"reload"}, "a request")["reload"], {"have"}, "reload")
    have = body["have"]
    if (
        not isinstance(have, list)
        or len(have) > MAX_HAVE
        or not all(isinstance(d, str) and DIGEST.fullmatch(d) for d in have)
    ):
        raise MessageError("reload.have: a list of program digests")
    return Reload(frozenset(have))


@dataclass(frozen=True)
class ProgramDescription:
    """A program of the config on disk, as the server needs it (no paths to read, no jobs)."""

    name: str
    origin: str
    digest: str
    model: dict[str, Any]
    code: str


class MapMeta(TypedDict):
    name: str
    fd: int
    key_desc: str


class FunctionMeta(TypedDict):
    name: str
    fd: int


class RingMeta(TypedDict):
    map: str
    cpu: int
    fd: int


class LoadedMeta(TypedDict):
    """What a compile worker says of a program it loaded; `fd` fields index its fds."""

    maps: list[MapMeta]
    functions: list[FunctionMeta]
    attachments: list[dict[str, Any]]
    perf_rings: list[RingMeta]
    compile_seconds: float
    attach_seconds: float
    headers: str
    tracepoint_ids: dict[str, str]  # event id -> tracepoint probe (tracefs is root's)
    counted_maps: list[str]  # maps whose failed updates the program counts (prelude)


@dataclass(frozen=True)
class Selection:
    programs: tuple[ProgramDescription, ...]
    compiling: tuple[str, ...]  # names, in the order their answers may come


@dataclass(frozen=True)
class Compiling:
    program: str


@dataclass(frozen=True)
class Loaded:
    program: str
    meta: LoadedMeta
    stderr: str  # what the worker printed on this program (warnings)


@dataclass(frozen=True)
class Failed:
    program: str
    stage: str  # compile, attach, unavailable, refused, worker
    error: str
    stderr: str


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Refused:
    """The request could not be served (a config error, a spawner that is stopping)."""

    error: str


@dataclass(frozen=True)
class Headers:
    check: dict[str, Any] | None  # a HeaderCheck as JSON; None: it could not be made
    error: str


Reply = Selection | Compiling | Loaded | Failed | Done | Refused | Headers


def encode_reply(reply: Reply) -> dict[str, Any]:
    if isinstance(reply, Selection):
        return {
            "selection": {
                "programs": [asdict(p) for p in reply.programs],
                "compiling": list(reply.compiling),
            }
        }
    kind = type(reply).__name__.lower()
    return {kind: asdict(reply)}


def decode_reply(message: dict[str, Any]) -> Reply:
    """The spawner's replies (trusted: it is the privileged side), checked for shape only."""
    if len(message) != 1:
        raise MessageError(f"a reply has one key, not {sorted(message)}")
    [(kind, body)] = message.items()
    try:
        if kind == "selection":
            return Selection(
                tuple(ProgramDescription(**p) for p in body["programs"]),
                tuple(body["compiling"]),
            )
        if kind == "loaded":
            return Loaded(body["program"], cast(LoadedMeta, body["meta"]), body["stderr"])
        types: dict[str, type[Reply]] = {
            "compiling": Compiling,
            "failed": Failed,
            "done": Done,
            "refused": Refused,
            "headers": Headers,
        }
        return types[kind](**body)
    except (KeyError, TypeError) as err:
        raise MessageError(f"{kind}: {err}") from None


def program_digest(model: dict[str, Any], code: str) -> str:
    """Identity of a program's definition: equal digests mean a reload may keep it loaded.
    Inline code and a source file holding the same text digest alike."""
    settings = {k: v for k, v in model.items() if k not in ("source", "code")}
    blob = json.dumps(settings, sort_keys=True) + "\0" + code
    return hashlib.sha256(blob.encode()).hexdigest()
