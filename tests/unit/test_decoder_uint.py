import sys
from typing import Literal

import pytest

from exporter.decoders import DecoderError
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.uint import Uint

OTHER_ORDER: Literal["little", "big"] = "big" if sys.byteorder == "little" else "little"


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_23_in_every_width(size: int) -> None:
    assert Uint({}, size).decode((23).to_bytes(size, sys.byteorder)) == b"23"


@pytest.mark.parametrize(
    ("size", "text"),
    [(1, b"255"), (2, b"65535"), (4, b"4294967295"), (8, b"18446744073709551615")],
)
def test_max_value_is_unsigned(size: int, text: bytes) -> None:
    assert Uint({}, size).decode(b"\xff" * size) == text


def test_native_byte_order() -> None:
    assert Uint({}, 2).decode((1).to_bytes(2, sys.byteorder)) == b"1"
    assert Uint({}, 2).decode((1).to_bytes(2, OTHER_ORDER)) == b"256"


def test_zero() -> None:
    assert Uint({}, 4).decode(bytes(4)) == b"0"


@pytest.mark.parametrize("size", [3, 5, 16])
def test_other_widths_are_rejected(size: int) -> None:
    with pytest.raises(DecoderError) as e:
        Uint({}, size)
    assert str(e.value) == f"uint decodes 1, 2, 4 or 8 bytes, not {size}"


def test_text_input_is_rejected() -> None:
    with pytest.raises(DecoderError, match="must be the first decoder"):
        Uint({}, TEXT_INPUT)


def test_v1_wraps_above_2_63_as_go_int() -> None:
    decoder = Uint({"v1": True}, 8)
    assert decoder.decode((2**64 - 1).to_bytes(8, sys.byteorder)) == b"-1"
    assert decoder.decode((2**63).to_bytes(8, sys.byteorder)) == b"-9223372036854775808"
    assert decoder.decode((2**63 - 1).to_bytes(8, sys.byteorder)) == b"9223372036854775807"
    assert Uint({"v1": True}, 4).decode(b"\xff\xff\xff\xff") == b"4294967295"


def test_signed_reads_twos_complement_of_8_bytes() -> None:
    assert Uint({"signed": True}, 8).decode((-2).to_bytes(8, sys.byteorder, signed=True)) == b"-2"
    with pytest.raises(DecoderError) as e:
        Uint({"signed": True}, 4)
    assert str(e.value) == "uint signed: true decodes 8 bytes"
