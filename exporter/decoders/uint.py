"""uint: an unsigned integer field in native byte order, as base-10 text.

`v1: true` (set by the ebpf_exporter v1 translation) decodes as v1.2.5 did: an 8-byte value
of 2^63 or more wraps to a negative number (Go's int(uint64)), 2^64 - 1 is "-1".
"""

import sys
from collections.abc import Mapping
from typing import Any

from ._base import TEXT_INPUT, V1, DecoderError, flag

_WIDTHS = (1, 2, 4, 8)


class Uint:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size == TEXT_INPUT:
            raise DecoderError("uint decodes a raw field, so it must be the first decoder")
        if size not in _WIDTHS:
            raise DecoderError(f"uint decodes 1, 2, 4 or 8 bytes, not {size}")
        # `signed: true`: a two's complement value (bpftrace's signed integer keys).
        signed = flag(options, "signed", "uint")
        if signed and size != 8:
            raise DecoderError("uint signed: true decodes 8 bytes")
        self._signed = signed or (flag(options, V1, "uint") and size == 8)

    def decode(self, data: bytes) -> bytes:
        # The map key was written by the kernel of this host, hence native byte order.
        return str(int.from_bytes(data, sys.byteorder, signed=self._signed)).encode()
