"""bpftrace source text -> tokens, each with its place for diagnostics."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .diagnostics import ScriptError, Span

# Longest first: `->` before `-`, `<=` before `<`.
PUNCTUATION = (
    "->", "==", "!=", "<=", ">=", "&&", "||", "<<", ">>", "++", "--",
    "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=",
    "{", "}", "(", ")", "[", "]", ",", ";", ":", "/", "+", "-", "*", "%",
    "<", ">", "=", "!", "~", "&", "|", "^", "?", ".",
)  # fmt: skip
_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*|/\*.*?\*/)
    |(?P<int>0[xX][0-9a-fA-F]+|[0-9][0-9_]*)
    |(?P<string>"(?:[^"\\\n]|\\.)*")
    |(?P<map>@[A-Za-z_0-9]*)
    |(?P<var>\$[A-Za-z_][A-Za-z_0-9]*)
    |(?P<ident>[A-Za-z_][A-Za-z_0-9]*)
    |(?P<punct>"""
    + "|".join(re.escape(p) for p in PUNCTUATION)
    + ")",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "0": "\0"}


@dataclass(frozen=True)
class Token:
    kind: str  # int, string, map, var, ident, punct, end
    text: str
    span: Span

    @property
    def value(self) -> str:
        """A string literal's text without quotes and escapes."""
        body = self.text[1:-1]
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def tokens(script: str) -> list[Token]:
    out: list[Token] = []
    at = 0
    while at < len(script):
        match = _TOKEN.match(script, at)
        if match is None:
            what = (
                "unterminated string" if script[at] == '"' else f"invalid character {script[at]!r}"
            )
            raise ScriptError(Span(at), what)
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            out.append(Token(kind, match.group(), Span(at, match.end() - at)))
        at = match.end()
    out.append(Token("end", "", Span(len(script))))
    return out
