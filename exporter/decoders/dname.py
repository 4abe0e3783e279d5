"""dname: a domain name in DNS wire format -> dotted text ("www.example.com").

The wire format (RFC 1035 3.1) is a sequence of labels, each a length byte (1-63) and that many
bytes, ended by a zero byte: b"\\x03www\\x07example\\x03com\\x00". Bytes after the end are
leftovers of the buffer and ignored. The root name (a lone zero byte, or an all-zero buffer)
is ".". Label bytes that are not printable ASCII, and "." or "\\" inside a label, are escaped as
in zone files and dig: "\\DDD" (decimal) and "\\.", "\\\\". Case is kept as sent.

A field that is no such name (no end within the field, a label longer than 63, a compression
pointer that cannot be followed outside its packet, a name over 255 bytes) never fails the
scrape: it decodes to "invalid:" and the hex of the field without its trailing zero bytes.

`v1: true` (set by the ebpf_exporter v1 translation) decodes as v1.2.5 did, which v1 configs
rely on: raw or after `string` (which drops the final zero), each length byte becomes "." and
the leading one is dropped; label bytes are not escaped; every zero byte after the name adds a
"." (a raw 16-byte field holding "\\x03com\\x00" decodes to "com" and 11 dots); empty input is
"."; a label running past the field returns the input unchanged.
"""

from collections.abc import Mapping
from typing import Any

from ._base import TEXT_INPUT, V1, DecoderError, flag

MAX_LABEL = 63
MAX_NAME = 255  # wire bytes, the lengths and the final zero included

# Printable ASCII stands for itself, except the escape character and the label separator.
_PLAIN = frozenset(range(0x21, 0x7F)) - {ord("."), ord("\\")}


def _escape(label: bytes) -> str:
    return "".join(
        chr(b) if b in _PLAIN else f"\\{chr(b)}" if b in b".\\" else f"\\{b:03d}" for b in label
    )


def _decode_v1(data: bytes) -> bytes:
    if not data:
        return b"."
    out = bytearray(len(data))
    i = 0
    while i < len(data):
        length = data[i]
        out[i] = ord(".")
        i += 1
        if i + length > len(data):
            return data
        out[i : i + length] = data[i : i + length]
        i += length
    return bytes(out[1:])


class Dname:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        self._v1 = flag(options, V1, "dname")
        if size == TEXT_INPUT and not self._v1:
            raise DecoderError("dname decodes a raw field, so it must be the first decoder")

    def decode(self, data: bytes) -> bytes:
        if self._v1:
            return _decode_v1(data)
        labels: list[str] = []
        i = 0
        while i < len(data):
            length = data[i]
            if length == 0:
                return (".".join(labels) or ".").encode()
            # 0xc0 marks a compression pointer, 0x40 and 0x80 reserved label types.
            end = i + 1 + length
            if length > MAX_LABEL or end >= min(len(data), MAX_NAME):
                break
            labels.append(_escape(data[i + 1 : end]))
            i = end
        return b"invalid:" + data.rstrip(b"\0").hex().encode()
