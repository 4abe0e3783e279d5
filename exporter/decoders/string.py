"""string: a NUL-terminated C char array (e.g. a comm), as UTF-8 text."""

from collections.abc import Mapping
from typing import Any


class String:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        pass  # any width: a char array may be of any length

    def decode(self, data: bytes) -> bytes:
        # Bytes after the first NUL are stale leftovers of the buffer, not part of the string;
        # the kernel does not guarantee UTF-8, and a label value must be valid UTF-8.
        return data.partition(b"\0")[0].decode("utf-8", "replace").encode()
