from typing import Any

import pytest

from exporter.decoders import DecoderError, SkipSeries
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.regexp import Regexp


def regexp(patterns: Any) -> Regexp:
    return Regexp({"name": "regexp", "regexps": patterns}, TEXT_INPUT)


def test_match_passes_through() -> None:
    assert regexp(["^foo", "bar$"]).decode(b"foobaz") == b"foobaz"
    assert regexp(["^foo", "bar$"]).decode(b"bazbar") == b"bazbar"


def test_search_not_match() -> None:
    assert regexp(["ab"]).decode(b"xxabxx") == b"xxabxx"


def test_no_match_skips_series() -> None:
    with pytest.raises(SkipSeries):
        regexp(["^foo", "bar$"]).decode(b"barfoo")


def test_matches_characters_not_bytes() -> None:
    assert regexp(["^caf.$"]).decode("café".encode()) == "café".encode()


def test_invalid_utf8_input_is_matched_as_replaced_text() -> None:
    assert regexp(["^\ufffdab$"]).decode(b"\xffab") == b"\xffab"


def test_invalid_pattern_is_quoted_with_the_re_error() -> None:
    with pytest.raises(DecoderError) as e:
        regexp(["ok", "[a"])
    assert str(e.value) == "regexp '[a' does not compile: unterminated character set at position 0"


@pytest.mark.parametrize("patterns", [None, [], "^foo", {"^foo": 1}])
def test_regexps_must_be_a_non_empty_list(patterns: Any) -> None:
    with pytest.raises(DecoderError, match="regexp needs a non-empty 'regexps' list"):
        regexp(patterns)


def test_patterns_must_be_strings() -> None:
    with pytest.raises(DecoderError, match="regexp patterns must be strings, not 1"):
        regexp(["^foo", 1])


@pytest.mark.parametrize("pattern", ["^[[:digit:]]+$", "[[:^space:]]", r"\z", r"\p{Greek}"])
def test_re2_only_syntax_is_refused(pattern: str) -> None:
    """v1's patterns were Go's RE2: what re would read otherwise, or not at all, is refused."""
    with pytest.raises(DecoderError, match="POSIX classes|does not compile"):
        Regexp({"regexps": [pattern]}, TEXT_INPUT)
