"""ifname: a 4-byte interface index -> interface name ("eth0"); unknown -> "unknown:<index>".

Names come from if_indextoname(3) in the daemon's network namespace: an ifindex taken in another
namespace (a pod's veth end seen from inside the pod) names whatever has that index in the
daemon's one, so run the daemon in the host's network namespace (hostNetwork: true). The index
of an interface that is gone by the first scrape decodes to "unknown:<index>"; as every label it
is decoded once per key, so a later rename is not seen.
"""

import socket
import sys
from collections.abc import Mapping
from typing import Any

from ._base import TEXT_INPUT, DecoderError


class Ifname:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size == TEXT_INPUT:
            raise DecoderError("ifname decodes a raw field, so it must be the first decoder")
        if size != 4:
            raise DecoderError(f"ifname decodes 4-byte interface indexes, not {size}")

    def decode(self, data: bytes) -> bytes:
        index = int.from_bytes(data, sys.byteorder)
        try:
            return socket.if_indextoname(index).encode()
        except OSError:  # ENXIO: no interface has this index (0 never does)
            return f"unknown:{index}".encode()
