"""inet_ip: an IPv4 (4 bytes) or IPv6 (16 bytes) address in network byte order, as text.

Addresses are kept in network byte order by the kernel (sockaddr, iphdr, sock_common), which is
what a program copies into its key: "10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1".
"""

import ipaddress
from collections.abc import Mapping
from typing import Any

from ._base import TEXT_INPUT, DecoderError


class InetIp:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size == TEXT_INPUT:
            raise DecoderError("inet_ip decodes a raw field, so it must be the first decoder")
        if size not in (4, 16):
            raise DecoderError(f"inet_ip decodes 4 (IPv4) or 16 (IPv6) bytes, not {size}")

    def decode(self, data: bytes) -> bytes:
        address = ipaddress.ip_address(data)
        # IPv4 peers of dual-stack sockets: dotted as RFC 5952 5 says (Python < 3.13 does not).
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return f"::ffff:{address.ipv4_mapped}".encode()
        return str(address).encode()
