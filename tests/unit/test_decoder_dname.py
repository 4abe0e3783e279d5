import pytest

from exporter.decoders import DecoderError
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.dname import Dname


def wire(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def dname(data: bytes) -> bytes:
    return Dname({}, len(data)).decode(data)


def test_labels_join_with_dots() -> None:
    assert dname(b"\x03www\x07example\x03com\x00") == b"www.example.com"


def test_leftovers_after_the_end_are_ignored() -> None:
    assert dname(wire(b"example", b"org") + b"\x05stale" + bytes(20)) == b"example.org"


@pytest.mark.parametrize("data", [b"\0", bytes(64), b"\0\x03www"])
def test_root_name(data: bytes) -> None:
    assert dname(data) == b"."


def test_case_is_kept() -> None:
    assert dname(wire(b"WwW", b"Example", b"COM")) == b"WwW.Example.COM"


def test_longest_label_and_longest_name() -> None:
    assert dname(wire(b"a" * 63, b"com")) == b"a" * 63 + b".com"
    # 255 wire bytes: four labels of 1 + 61 bytes, one of 1 + 5, and the final zero.
    longest = wire(*[b"x" * 61] * 4, b"y" * 5)
    assert len(longest) == 255
    assert dname(longest + bytes(45)) == b".".join([b"x" * 61] * 4 + [b"y" * 5])


@pytest.mark.parametrize(
    ("label", "text"),
    [
        (b"a.b", b"a\\.b"),
        (b"a\\b", b"a\\\\b"),
        (b"a b", b"a\\032b"),
        (b"\x00\x7f", b"\\000\\127"),
        (b"caf\xc3\xa9", b"caf\\195\\169"),
        (b"_dmarc", b"_dmarc"),
        (b"-~!*", b"-~!*"),
    ],
)
def test_special_bytes_are_escaped_as_in_zone_files(label: bytes, text: bytes) -> None:
    assert dname(wire(label, b"com")) == text + b".com"


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"\x03www\x07exa", b"invalid:0377777707657861"),  # cut short: no end in the field
        (b"\x03www", b"invalid:03777777"),  # the end would be just past the field
        (b"\x40" + b"a" * 64 + b"\0", b"invalid:40" + b"61" * 64),  # label of 64
        (b"\x03www\xc0\x0c\0\0", b"invalid:03777777c00c"),  # compression pointer
        (b"\x03www\x80abc\0", b"invalid:0377777780616263"),  # reserved label type 0x80
        (b"\x03www" + b"\xff" * 4, b"invalid:03777777ffffffff"),  # garbage
    ],
)
def test_malformed_names_decode_to_their_hex(data: bytes, text: bytes) -> None:
    assert dname(data) == text


def test_names_over_255_bytes_are_invalid() -> None:
    too_long = wire(*[b"x" * 61] * 4, b"y" * 6)
    assert len(too_long) == 256
    assert dname(too_long + bytes(10)) == b"invalid:" + too_long[:-1].hex().encode()


def test_text_input_is_rejected() -> None:
    with pytest.raises(DecoderError, match="dname decodes a raw field"):
        Dname({}, TEXT_INPUT)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        # v1.2.5's decoder/dname_test.go (after `string`: no final zero)
        (b"", b"."),
        (b"\x03com", b"com"),
        (b"\x07example\x03com", b"example.com"),
        (b"\x05com", b"\x05com"),  # a label past the end: the input as it is
        # raw, with its final zero and leftovers: a dot for each zero byte
        (b"\x03com\x00\x00", b"com.."),
        (b"\x03a.b\x00", b"a.b."),  # no escapes
    ],
)
def test_v1_decodes_as_v1(data: bytes, text: bytes) -> None:
    assert Dname({"v1": True}, TEXT_INPUT).decode(data) == text
    assert Dname({"v1": True}, len(data) or 1).decode(data) == text
