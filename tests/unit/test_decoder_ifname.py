import socket
import sys

import pytest

from exporter.decoders import DecoderError
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.ifname import Ifname


def index(n: int) -> bytes:
    return n.to_bytes(4, sys.byteorder)


def test_every_interface_of_this_host_by_its_index() -> None:
    decoder = Ifname({}, 4)
    interfaces = socket.if_nameindex()
    assert interfaces  # at least lo
    for n, name in interfaces:
        assert decoder.decode(index(n)) == name.encode()


@pytest.mark.parametrize("n", [0, 2**31 - 1, 2**32 - 1])
def test_unknown_index_keeps_its_number(n: int) -> None:
    assert Ifname({}, 4).decode(index(n)) == f"unknown:{n}".encode()


@pytest.mark.parametrize("size", [1, 2, 8])
def test_other_widths_are_rejected(size: int) -> None:
    with pytest.raises(DecoderError) as e:
        Ifname({}, size)
    assert str(e.value) == f"ifname decodes 4-byte interface indexes, not {size}"


def test_text_input_is_rejected() -> None:
    with pytest.raises(DecoderError, match="ifname decodes a raw field"):
        Ifname({}, TEXT_INPUT)
