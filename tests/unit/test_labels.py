"""LabelDecoder: decoded once per key, except values a decoder could not resolve yet."""

import pytest

from exporter.config.models import Counter
from exporter.decoders import Chain, SkipSeries, Unresolved
from exporter.metrics import labels
from exporter.metrics.labels import Field, LabelDecoder


class Answers:
    """A decoder answering from a script, counting how often it is asked."""

    def __init__(self, *answers: bytes | Exception) -> None:
        self.answers = list(answers)
        self.asked = 0

    def decode(self, data: bytes) -> bytes:
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def decoder_of(answers: Answers) -> LabelDecoder:
    return LabelDecoder("metrics.counters[0]", [Field("x", 0, 4, Chain([answers]))], 4)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(labels.time, "monotonic", lambda: now[0])
    return now


def test_a_key_is_decoded_once():
    answers = Answers(b"a")
    decode = decoder_of(answers)
    assert [decode(b"\1\0\0\0"), decode(b"\1\0\0\0")] == [("a",), ("a",)]
    assert answers.asked == 1


def test_an_unresolved_value_is_shown_then_asked_again(clock):
    answers = Answers(Unresolved(b"unknown"), b"/kubepods/pod1")
    decode = decoder_of(answers)
    key = b"\7\0\0\0"
    assert decode(key) == ("unknown",)
    clock[0] += labels.UNRESOLVED_SECONDS - 1
    assert decode(key) == ("unknown",)  # not asked again yet
    assert answers.asked == 1
    clock[0] += 1
    assert decode(key) == ("/kubepods/pod1",)
    clock[0] += 3600
    assert decode(key) == ("/kubepods/pod1",)  # resolved: cached for good
    assert answers.asked == 2


def test_a_key_decoded_without_remembering_is_not_cached_but_uses_the_cache():
    # Keys past the series limit: decoded each time, never evicting the kept keys' labels.
    answers = Answers(b"kept", b"past", b"past")
    decode = decoder_of(answers)
    kept, past = b"\1\0\0\0", b"\2\0\0\0"
    assert decode(kept) == ("kept",)
    assert [decode(past, False), decode(past, False)] == [("past",), ("past",)]
    assert decode(kept, False) == ("kept",)  # cached before: not asked again
    assert answers.asked == 3


def test_a_dropped_series_is_cached_and_a_failure_counted():
    answers = Answers(SkipSeries(), ValueError("bad"), ValueError("bad"))
    decode = decoder_of(answers)
    assert decode(b"\1\0\0\0") is None
    assert decode(b"\1\0\0\0") is None
    assert decode(b"\2\0\0\0") is None
    assert decode(b"\2\0\0\0") is None
    assert (answers.asked, decode.errors) == (3, 2)


def test_labels_with_an_offset_share_key_bytes():
    hexed = {"name": "hex"}
    metric = Counter.model_validate(
        {
            "name": "pod_calls_total",
            "help": "h",
            "map": "m",
            "labels": [
                {"name": "pod", "size": 8, "decoders": [hexed]},
                {"name": "container", "size": 8, "offset": 0, "decoders": [hexed]},
                {"name": "nr", "size": 4, "padding": 4, "decoders": [{"name": "uint"}]},
            ],
        }
    )
    fields, span = labels.layout("p", "metrics.counters[0]", metric)
    assert [(f.name, f.offset) for f in fields] == [("pod", 0), ("container", 0), ("nr", 8)]
    assert span == 16
    key = bytes(range(1, 9)) + (7).to_bytes(4, "little") + bytes(4)
    assert LabelDecoder("w", fields, span)(key) == ("0102030405060708",) * 2 + ("7",)


def test_keys_gone_from_the_map_leave_the_cache(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(labels, "PRUNE_SLACK", 0)
    answers = Answers(*(str(i).encode() for i in range(200)))
    decode = decoder_of(answers)
    keys = [i.to_bytes(4, "little") for i in range(100)]
    decode.begin(0)  # the first collection: 100 keys
    for key in keys:
        decode(key)
    decode.end()
    decode.begin(100)  # 100 keys live: nothing to prune
    for key in keys[:10]:  # the map now holds 10 of them, plus nothing new
        decode(key)
    decode.end()
    decode.begin(10)  # the cache holds 100 for 10 live keys: this collection prunes
    for key in keys[:10]:
        assert decode(key) == (str(keys.index(key)),)
    decode.end()
    assert answers.asked == 100  # the live keys kept their decoding
    assert len(decode._cache) == 10
    decode(keys[50])  # gone and back: decoded anew
    assert answers.asked == 101
