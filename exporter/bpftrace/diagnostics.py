"""Errors in a bpftrace script, shown as bpftrace shows them: where, the line, a caret."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """Where a token or node is: 0-based offset into the script, and its length."""

    start: int
    length: int = 1

    def to(self, end: Span) -> Span:
        return Span(self.start, max(1, end.start + end.length - self.start))


class ScriptError(Exception):
    """Something in the script this exporter cannot run, and where it is."""

    def __init__(self, span: Span, message: str) -> None:
        super().__init__(message)
        self.span = span
        self.message = message


@dataclass(frozen=True)
class Origin:
    """Where the script's text sits: a file of its own (line 1, column 1) or a YAML block
    scalar of a config file, whose lines start `first_line` down and `indent` across."""

    path: str
    first_line: int = 1
    indent: int = 0


def render(error: ScriptError, script: str, origin: Origin, what: str = "") -> str:
    """`file:line:column: error: message`, the script's line, and a caret under the spot
    (tildes along the rest of the token), as bpftrace prints its errors; `what` (the program)
    is said after the message."""
    start = min(error.span.start, len(script))
    line_start = script.rfind("\n", 0, start) + 1
    line_end = script.find("\n", start)
    if line_end == -1:
        line_end = len(script)
    text = script[line_start:line_end]
    column = start - line_start
    width = max(1, min(error.span.length, len(text) - column))
    line = script.count("\n", 0, start) + origin.first_line
    indent = " " * origin.indent
    return (
        f"{origin.path}:{line}:{column + 1 + origin.indent}: error: {error.message}"
        f"{f' ({what})' if what else ''}\n"
        f"{indent}{text}\n"
        f"{indent}{' ' * column}^{'~' * (width - 1)}"
    )
