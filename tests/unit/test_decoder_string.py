import pytest

from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.string import String


def decode(data: bytes, size: int = 16) -> bytes:
    return String({}, size).decode(data)


def test_cut_at_first_nul() -> None:
    assert decode(b"bash\0\0garbage") == b"bash"


def test_no_nul_keeps_everything() -> None:
    assert decode(b"0123456789abcdef") == b"0123456789abcdef"


def test_leading_nul_is_empty() -> None:
    assert decode(b"\0bash") == b""


def test_invalid_utf8_is_replaced() -> None:
    assert decode(b"\xff\xfeab\0").decode() == "\ufffd\ufffdab"


def test_valid_utf8_passes() -> None:
    assert decode("café\0x".encode()) == "café".encode()


@pytest.mark.parametrize("size", [1, 7, 16, 256, TEXT_INPUT])
def test_any_width(size: int) -> None:
    assert decode(b"x\0", size) == b"x"
