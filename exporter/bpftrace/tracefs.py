"""What the kernel says of its tracepoints: which ones a wildcard names, and their fields.

Read at translation, in the config worker (root, like the compile workers that read the same
files): a wildcard is expanded into one function per tracepoint, as bpftrace expands it, so each
has its own `args` and the `probe` builtin is a constant per function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import tracefs
from ..probes import Probe
from .types import Integer, String, Type

_FIELD = re.compile(
    r"^\s*field:(?P<decl>[^;]*);\s*offset:\d+;\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d)"
)
# Types the kernel's syscall tracepoints declare `int` but lay out in 8 bytes (signed:0):
# bpftrace reads the type's name, and so do we, so that `args->dfd` is signed in both.
# The kernel's signed typedefs count as what they stand for, as bpftrace resolves them.
_SIGNED_NAMES = re.compile(
    r"^(signed\s+)?(char|short|int|long|long long|long int|s8|s16|s32|s64|__s8|__s16|__s32"
    r"|__s64|pid_t|off_t|loff_t|ssize_t|time_t|clockid_t|key_t|mqd_t|timer_t)$"
)


class TracefsError(Exception):
    """The tracepoint or field is not on this kernel."""


@dataclass
class Tracepoints:
    root: Path = field(default_factory=lambda: tracefs.TRACEFS)
    _formats: dict[tuple[str, str], dict[str, Type | None]] = field(default_factory=dict)

    def expand(self, category: str, event: str) -> list[tuple[str, str]]:
        """The (category, event) pairs a possibly wildcard probe names, sorted."""
        from ..compiler.availability import ProbeUnavailable, tracepoints

        try:
            found = tracepoints(Probe("tracepoint", (category, event)), self.root)
        except ProbeUnavailable as err:
            raise TracefsError(str(err)) from None
        return [(path.parent.name, path.name) for path in found]

    def fields(self, category: str, event: str) -> dict[str, Type | None]:
        """The tracepoint's own fields (not the common_ ones) and their types; None for a
        field of a type the subset cannot read (__data_loc strings, structs)."""
        key = (category, event)
        if key not in self._formats:
            path = self.root / "events" / category / event / "format"
            try:
                text = path.read_text()
            except OSError as err:
                raise TracefsError(f"cannot read {path}: {err.strerror}") from None
            self._formats[key] = parse_format(text)
        return self._formats[key]


def parse_format(text: str) -> dict[str, Type | None]:
    found: dict[str, Type | None] = {}
    for line in text.splitlines():
        match = _FIELD.match(line)
        if match is None:
            continue
        decl = match.group("decl").strip()
        name_match = re.search(r"(\w+)\s*(\[(\d*)\])?$", decl)
        if name_match is None or name_match.group(1).startswith("common_"):
            continue
        name = name_match.group(1)
        type_name = decl[: name_match.start()].strip()
        found[name] = _type(type_name, name_match, int(match.group("size")), match.group("signed"))
    return found


def _type(type_name: str, name: re.Match[str], size: int, signed: str) -> Type | None:
    if type_name.startswith("__data_loc") or type_name.startswith("struct"):
        return None
    if name.group(2):  # an array: a string if of chars
        return String(size) if type_name in ("char", "unsigned char", "u8") else None
    if size > 8:
        return None
    if "*" in type_name:
        return Integer(False)
    return Integer(signed == "1" or bool(_SIGNED_NAMES.match(type_name)))
