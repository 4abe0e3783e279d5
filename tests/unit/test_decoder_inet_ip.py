import socket

import pytest

from exporter.decoders import DecoderError
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.inet_ip import InetIp


@pytest.mark.parametrize(
    "text", ["0.0.0.0", "10.0.0.1", "127.0.0.1", "192.168.255.254", "255.255.255.255"]
)
def test_ipv4_in_network_byte_order(text: str) -> None:
    assert InetIp({}, 4).decode(socket.inet_pton(socket.AF_INET, text)) == text.encode()


@pytest.mark.parametrize(
    ("packed", "text"),
    [
        (bytes(16), b"::"),
        (bytes(15) + b"\x01", b"::1"),
        (b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01", b"2001:db8::1"),
        (b"\xfe\x80" + bytes(6) + b"\x02\x11\x22\xff\xfe\x33\x44\x55", b"fe80::211:22ff:fe33:4455"),
        (bytes(10) + b"\xff\xff\x0a\x00\x00\x01", b"::ffff:10.0.0.1"),
    ],
)
def test_ipv6_in_network_byte_order(packed: bytes, text: bytes) -> None:
    assert InetIp({}, 16).decode(packed) == text


@pytest.mark.parametrize("size", [1, 2, 6, 8, 15, 32])
def test_other_widths_are_rejected(size: int) -> None:
    with pytest.raises(DecoderError) as e:
        InetIp({}, size)
    assert str(e.value) == f"inet_ip decodes 4 (IPv4) or 16 (IPv6) bytes, not {size}"


def test_text_input_is_rejected() -> None:
    with pytest.raises(DecoderError, match="inet_ip decodes a raw field"):
        InetIp({}, TEXT_INPUT)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        # v1.2.5's decoder/inet_ip_test.go
        (bytes([1, 2, 3, 4]), b"1.2.3.4"),
        (
            bytes.fromhex("2400cb00000410240000 0000a29efd8f".replace(" ", "")),
            b"2400:cb00:4:1024::a29e:fd8f",
        ),
        (socket.inet_pton(socket.AF_INET6, "::ffff:10.0.0.1"), b"10.0.0.1"),  # Go's To4()
        (bytes([1, 2, 3, 4, 5, 6]), b"?010203040506"),  # Go's net.IP of another length
    ],
)
def test_v1_decodes_as_go(data: bytes, text: bytes) -> None:
    assert InetIp({"v1": True}, len(data)).decode(data) == text
