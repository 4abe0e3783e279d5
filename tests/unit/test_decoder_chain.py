import sys
from typing import Any

import pytest

from exporter.decoders import REGISTRY, DecoderError, SkipSeries, build_chain

OPS = {"name": "static_map", "static_map": {1: "read", 2: "write"}}


def test_registry_names() -> None:
    assert sorted(REGISTRY) == [
        "cgroup",
        "dname",
        "errno",
        "hex",
        "ifname",
        "inet_ip",
        "k8s_container",
        "k8s_namespace",
        "k8s_pod",
        "ksym",
        "majorminor",
        "regexp",
        "static_map",
        "string",
        "syscall",
        "tracepoint",
        "uint",
    ]


def test_single_decoder_returns_str() -> None:
    assert build_chain([{"name": "uint"}], 4).decode((23).to_bytes(4, sys.byteorder)) == "23"


def test_uint_then_static_map() -> None:
    chain = build_chain([{"name": "uint"}, OPS], 4)
    assert chain.decode((1).to_bytes(4, sys.byteorder)) == "read"
    assert chain.decode((2).to_bytes(4, sys.byteorder)) == "write"
    assert chain.decode((3).to_bytes(4, sys.byteorder)) == "unknown:3"


def test_string_then_regexp_drops_the_series() -> None:
    chain = build_chain([{"name": "string"}, {"name": "regexp", "regexps": ["^bash$"]}], 16)
    assert chain.decode(b"bash\0\0garbage\0\0\0") == "bash"
    with pytest.raises(SkipSeries):
        chain.decode(b"sshd\0" + bytes(11))


def test_raw_bytes_first_are_decoded_as_text() -> None:
    assert build_chain([OPS], 1).decode(b"\xff") == "unknown:\ufffd"


def test_empty_chain() -> None:
    with pytest.raises(DecoderError, match="a label needs at least one decoder"):
        build_chain([], 4)


def test_zero_width_field() -> None:
    with pytest.raises(DecoderError, match="a field is at least 1 byte wide, not 0"):
        build_chain([{"name": "string"}], 0)


@pytest.mark.parametrize("name", ["usym", None, ["uint"]])
def test_unknown_decoder_lists_known_ones(name: Any) -> None:
    with pytest.raises(DecoderError) as e:
        build_chain([{"name": name}], 4)
    assert str(e.value) == (
        f"unknown decoder {name!r}, known: cgroup, dname, errno, hex, ifname, inet_ip, "
        "k8s_container, k8s_namespace, k8s_pod, ksym, majorminor, regexp, static_map, string, "
        "syscall, tracepoint, uint"
    )


def test_decoder_must_be_a_mapping() -> None:
    with pytest.raises(DecoderError, match="a decoder is a mapping with a 'name', not 'uint'"):
        build_chain(["uint"], 4)  # type: ignore[list-item]


def test_first_decoder_sees_the_field_width() -> None:
    with pytest.raises(DecoderError, match="uint decodes 1, 2, 4 or 8 bytes, not 3"):
        build_chain([{"name": "uint"}], 3)


def test_later_decoders_do_not_see_the_field_width() -> None:
    with pytest.raises(DecoderError, match="uint .* must be the first decoder"):
        build_chain([{"name": "string"}, {"name": "uint"}], 8)


def test_option_errors_surface_from_build() -> None:
    with pytest.raises(DecoderError, match="regexp '\\(' does not compile"):
        build_chain([{"name": "string"}, {"name": "regexp", "regexps": ["("]}], 16)
