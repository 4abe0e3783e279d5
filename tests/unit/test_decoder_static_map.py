from typing import Any

import pytest

from exporter.decoders import DecoderError
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.static_map import StaticMap


def static_map(table: Any, **options: Any) -> StaticMap:
    return StaticMap({"name": "static_map", "static_map": table, **options}, TEXT_INPUT)


def test_int_and_str_keys_match_text() -> None:
    decoder = static_map({1: "read", "2": "write"})
    assert decoder.decode(b"1") == b"read"
    assert decoder.decode(b"2") == b"write"


def test_int_value_becomes_text() -> None:
    assert static_map({1: 200}).decode(b"1") == b"200"


def test_unknown_is_marked() -> None:
    assert static_map({1: "read"}).decode(b"3") == b"unknown:3"


def test_unknown_passes_when_allowed() -> None:
    assert static_map({1: "read"}, allow_unknown=True).decode(b"3") == b"3"
    assert static_map({1: "read"}, allow_unknown=True).decode(b"1") == b"read"


def test_raw_bytes_are_read_as_text() -> None:
    decoder = StaticMap({"static_map": {"1": "read"}}, 4)
    assert decoder.decode(b"1") == b"read"


@pytest.mark.parametrize("table", [None, {}, ["read", "write"], "1: read"])
def test_missing_or_empty_map(table: Any) -> None:
    with pytest.raises(DecoderError, match="static_map needs a non-empty 'static_map' mapping"):
        static_map(table)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({True: "yes"}, "static_map key must be a string or an integer, not True"),
        ({1.5: "x"}, "static_map key must be a string or an integer, not 1.5"),
        ({1: None}, "static_map value must be a string or an integer, not None"),
        ({1: ["read"]}, r"static_map value must be a string or an integer, not \['read'\]"),
    ],
)
def test_bad_keys_and_values(table: Any, message: str) -> None:
    with pytest.raises(DecoderError, match=message):
        static_map(table)


def test_allow_unknown_must_be_bool() -> None:
    with pytest.raises(DecoderError, match="'allow_unknown' must be true or false, not 'yes'"):
        static_map({1: "read"}, allow_unknown="yes")
