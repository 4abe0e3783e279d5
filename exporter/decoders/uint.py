"""uint: an unsigned integer field in native byte order, as base-10 text."""

import sys
from collections.abc import Mapping
from typing import Any

from ._base import TEXT_INPUT, DecoderError

_WIDTHS = (1, 2, 4, 8)


class Uint:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size == TEXT_INPUT:
            raise DecoderError("uint decodes a raw field, so it must be the first decoder")
        if size not in _WIDTHS:
            raise DecoderError(f"uint decodes 1, 2, 4 or 8 bytes, not {size}")

    def decode(self, data: bytes) -> bytes:
        # The map key was written by the kernel of this host, hence native byte order.
        return str(int.from_bytes(data, sys.byteorder)).encode()
