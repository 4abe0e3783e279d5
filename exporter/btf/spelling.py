"""BTF_READ and BTF_READ_INTO in a program's C, written out with the kernel's offsets.

    BTF_READ(ptr, struct S, path)            -> __BTF_VALUE(u64, ptr, 1824)
    BTF_READ_INTO(dst, ptr, struct S, path)  -> __BTF_COPY(dst, 16, __BTF_PTR(ptr, 1280), 1752, ..)

(programs/include/bcc_btf.h defines the macros on the right.) Spellings in comments and string
literals are left alone; a replacement keeps the line count of what it replaces, so compiler
messages keep the program's own line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from .fields import Access, FieldError

# programs/include/ of the repository, through the link a wheel carries (as the prelude's).
HEADER = Path(
    str(resources.files("exporter") / "builtin" / "programs" / "include" / "bcc_btf.h")
).resolve()
MAIN_FILE = "/virtual/main.c"  # BCC's name for the program: diagnostics keep naming it
ARGUMENTS = {"BTF_READ": ("ptr", "type", "path"), "BTF_READ_INTO": ("dst", "ptr", "type", "path")}
_NAME = re.compile(r"[A-Za-z_]\w*")
_SKIP = re.compile(r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'", re.S)


class SpellingError(Exception):
    """A spelling that cannot be written out; `line` and `column` are the program's."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.line = line
        self.column = column

    def diagnostic(self) -> str:
        """As the compiler would say it, so that the daemon reports it as it reports those."""
        return f"{MAIN_FILE}:{self.line}:{self.column}: error: {self}"


@dataclass(frozen=True)
class Spelling:
    macro: str
    start: int  # of the macro's name in the code
    end: int  # after its closing parenthesis
    arguments: tuple[str, ...]


def uses_btf(code: str) -> bool:
    return bool(spellings(code))


def spellings(code: str) -> list[Spelling]:
    found: list[Spelling] = []
    pos = 0
    while True:
        match = _next_name(code, pos)
        if match is None:
            return found
        start, name = match
        pos = start + len(name)
        if name not in ARGUMENTS:
            continue
        opening = _skip_space(code, pos)
        if opening >= len(code) or code[opening] != "(":
            continue  # the name alone (a #ifdef, a comment-free mention): not a use
        arguments, end = _arguments(code, opening)
        found.append(Spelling(name, start, end, arguments))
        pos = end


def rewrite(code: str, access: Callable[[str, str], Access]) -> str:
    """The code with every spelling written out, and the header before it when there is one;
    SpellingError for one that cannot be (its message names struct, field and kernel)."""
    out, pos = [], 0
    for use in spellings(code):
        out.append(code[pos : use.start])
        out.append(_written_out(code, use, access))
        pos = use.end
    if not out:
        return code
    out.append(code[pos:])
    return f'#line 1 "{HEADER.name}"\n{_header()}\n#line 1 "{MAIN_FILE}"\n' + "".join(out)


@cache
def _header() -> str:
    return HEADER.read_text(encoding="utf-8")


def _written_out(code: str, use: Spelling, access: Callable[[str, str], Access]) -> str:
    line = code.count("\n", 0, use.start) + 1
    column = use.start - (code.rfind("\n", 0, use.start) + 1) + 1
    wanted = ARGUMENTS[use.macro]
    if len(use.arguments) != len(wanted) or not all(a.strip() for a in use.arguments):
        raise SpellingError(f"{use.macro}({', '.join(wanted)}): got {use.arguments}", line, column)
    given = dict(zip(wanted, use.arguments, strict=True))
    try:
        found = access(given["type"], given["path"])
    except (FieldError, ValueError) as err:
        raise SpellingError(f"{use.macro}: {err}", line, column) from None
    base = f"({given['ptr'].strip()})"
    for offset in found.offsets[:-1]:
        base = f"__BTF_PTR({base}, {offset})"
    last = found.offsets[-1]
    what = " ".join(given["type"].split()) + "." + re.sub(r"\s+", "", given["path"])
    if use.macro == "BTF_READ_INTO":
        text = f'__BTF_COPY({given["dst"].strip()}, {found.size}, {base}, {last}, "{what}")'
    else:
        text = f"__BTF_VALUE({_c_type(found, what, line, column)}, {base}, {last})"
    # As many lines as the spelling took, so that the lines after it keep their numbers.
    return text.replace("\n", " ") + "\n" * code.count("\n", use.start, use.end)


def _c_type(found: Access, what: str, line: int, column: int) -> str:
    if found.shape == "ptr":
        return "void *"
    if found.shape == "int" and found.size in (1, 2, 4, 8):
        return f"{'s' if found.signed else 'u'}{found.size * 8}"
    raise SpellingError(
        f"BTF_READ: {what} is {found.size} bytes of {found.shape}, not a number or pointer:"
        " copy it with BTF_READ_INTO(dst, ...)",
        line,
        column,
    )


def _next_name(code: str, pos: int) -> tuple[int, str] | None:
    """The next identifier outside comments and literals: (where, name)."""
    while pos < len(code):
        skipped = _SKIP.match(code, pos)
        if skipped:
            pos = skipped.end()
            continue
        named = _NAME.match(code, pos)
        if named and (pos == 0 or not (code[pos - 1].isalnum() or code[pos - 1] == "_")):
            return pos, named.group()
        pos = named.end() if named else pos + 1
    return None


def _skip_space(code: str, pos: int) -> int:
    while pos < len(code) and code[pos].isspace():
        pos += 1
    return pos


def _arguments(code: str, opening: int) -> tuple[tuple[str, ...], int]:
    """The comma-separated arguments of the call whose "(" is at `opening`, and where it ends."""
    depth, pos, start = 0, opening, opening + 1
    arguments = []
    while pos < len(code):
        skipped = _SKIP.match(code, pos)
        if skipped:
            pos = skipped.end()
            continue
        char = code[pos]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                arguments.append(code[start:pos])
                return tuple(arguments), pos + 1
        elif char == "," and depth == 1:
            arguments.append(code[start:pos])
            start = pos + 1
        pos += 1
    line = code.count("\n", 0, opening) + 1
    raise SpellingError("unbalanced parentheses after BTF_READ", line, 1)
