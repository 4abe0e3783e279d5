import pytest

from exporter.decoders import build_chain
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.hex import Hex


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"\x00", b"00"),
        (b"\xff", b"ff"),
        (b"\xde\xad\xbe\xef", b"deadbeef"),
        (b"\x0a\x1b\x00\x00\x00\x00\x00\x00", b"0a1b000000000000"),
        (bytes(range(16)), b"000102030405060708090a0b0c0d0e0f"),
    ],
)
def test_bytes_in_memory_order_lowercase(data: bytes, text: bytes) -> None:
    assert Hex({}, len(data)).decode(data) == text


@pytest.mark.parametrize("size", [1, 3, 6, 20, 255])
def test_any_width(size: int) -> None:
    assert Hex({}, size).decode(b"\xab" * size) == b"ab" * size


def test_after_another_decoder_shows_its_text() -> None:
    assert Hex({}, TEXT_INPUT).decode(b"ok") == b"6f6b"
    assert build_chain([{"name": "string"}, {"name": "hex"}], 4).decode(b"ab\0\0") == "6162"
