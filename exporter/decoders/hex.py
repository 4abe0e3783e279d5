"""hex: bytes as lowercase hex, two digits per byte in memory order ("0a1b")."""

from collections.abc import Mapping
from typing import Any


class Hex:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        pass  # any width; after another decoder it shows that decoder's text as hex

    def decode(self, data: bytes) -> bytes:
        # Memory order, not a number: a 4-byte 1 on x86_64 is "01000000". Use uint for numbers.
        return data.hex().encode()
