"""Text for a terminal: what the kernel or another user names (a process's comm, a path, a
probe) can hold escape sequences that clear the screen, retitle the window or hide lines."""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every non-printable character (controls, ESC, bidi overrides, line and
    paragraph separators) written as its Python escape: `\\x1b`, `\\u202e`."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
