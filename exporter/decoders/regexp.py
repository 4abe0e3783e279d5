"""regexp: keep a series only if its label text matches one of the patterns (re.search)."""

import re
from collections.abc import Mapping
from typing import Any

from ._base import DecoderError, SkipSeries


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
