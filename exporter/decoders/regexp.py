"""regexp: keep a series only if its label text matches one of the patterns (re.search).

Patterns are Python's re. ebpf_exporter v1 patterns (Go's RE2) mean the same where both
compile, except POSIX classes ("[[:digit:]]"), which re reads as a set of characters: they
are refused. RE2-only syntax (\\z, \\p{Greek}, \\Q...\\E) does not compile in re and is refused too.
"""

import re
from collections.abc import Mapping
from typing import Any

from ._base import DecoderError, SkipSeries

POSIX_CLASS = re.compile(r"\[:\^?[a-z]+:\]")


class Regexp:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        patterns = options.get("regexps")
        # Not any Sequence: a bare string is one, and would become one pattern per character.
        if not isinstance(patterns, list | tuple) or not patterns:
            raise DecoderError(f"regexp needs a non-empty 'regexps' list, got {patterns!r}")
        self._patterns = []
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise DecoderError(f"regexp patterns must be strings, not {pattern!r}")
            if POSIX_CLASS.search(pattern):
                raise DecoderError(
                    f"regexp {pattern!r}: POSIX classes such as [[:digit:]] are RE2's, not "
                    "Python's: write the characters ([0-9])"
                )
            try:
                self._patterns.append(re.compile(pattern))
            except re.error as e:
                raise DecoderError(f"regexp {pattern!r} does not compile: {e}") from None

    def decode(self, data: bytes) -> bytes:
        # Match text, not bytes, so that `.` and `\w` see characters as the user wrote them.
        text = data.decode("utf-8", "replace")
        if any(p.search(text) for p in self._patterns):
            return data
        raise SkipSeries
