"""inet_ip: an IPv4 (4 bytes) or IPv6 (16 bytes) address in network byte order, as text.

Addresses are kept in network byte order by the kernel (sockaddr, iphdr, sock_common), which is
what a program copies into its key: "10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1".

`v1: true` (set by the ebpf_exporter v1 translation) decodes as v1.2.5 did (Go's net.IP): an
IPv4-mapped IPv6 address is dotted IPv4 ("10.0.0.1"), and a field of any other width is "?"
and its hex.
"""

import ipaddress
from collections.abc import Mapping
from typing import Any

from ._base import TEXT_INPUT, V1, DecoderError, flag


class InetIp:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size == TEXT_INPUT:
            raise DecoderError("inet_ip decodes a raw field, so it must be the first decoder")
        self._v1 = flag(options, V1, "inet_ip")
        if size not in (4, 16) and not self._v1:
            raise DecoderError(f"inet_ip decodes 4 (IPv4) or 16 (IPv6) bytes, not {size}")

    def decode(self, data: bytes) -> bytes:
        if len(data) not in (4, 16):  # v1 only
            return b"?" + data.hex().encode()
        address = ipaddress.ip_address(data)
        if self._v1 and isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            return str(address.ipv4_mapped).encode()
        # IPv4 peers of dual-stack sockets: dotted as RFC 5952 5 says (Python < 3.13 does not).
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return f"::ffff:{address.ipv4_mapped}".encode()
        return str(address).encode()
