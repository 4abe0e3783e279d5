"""The wire between a compile worker and the daemon: JSON plus fds over a SEQPACKET socketpair."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

# The kernel passes at most SCM_MAX_FD (253) descriptors per message.
FDS_PER_MESSAGE = 250
MAX_MESSAGE = 1 << 20


def send(sock: socket.socket, meta: dict[str, Any], fds: list[int]) -> None:
    meta = {**meta, "fd_count": len(fds)}
    chunks = [fds[i : i + FDS_PER_MESSAGE] for i in range(0, len(fds), FDS_PER_MESSAGE)] or [[]]
    socket.send_fds(sock, [json.dumps(meta).encode()], chunks[0])
    for chunk in chunks[1:]:
        socket.send_fds(sock, [b"fds"], chunk)


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Return the worker's message and the fds it sent; ({}, []) if it died before sending."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, FDS_PER_MESSAGE)
    if not data:
        return {}, []
    meta = json.loads(data)
    while len(fds) < meta["fd_count"]:
        more, extra, _, _ = socket.recv_fds(sock, MAX_MESSAGE, FDS_PER_MESSAGE)
        if not more:
            break
        fds.extend(extra)
    if len(fds) < meta["fd_count"]:
        # A half-sent program is no program: closing what arrived detaches it.
        for fd in fds:
            os.close(fd)
        return {}, []
    return meta, fds
