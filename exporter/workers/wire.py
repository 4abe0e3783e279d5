"""JSON messages plus fds over a SEQPACKET socket, in chunks of what one message may carry."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any

# The kernel passes at most SCM_MAX_FD (253) descriptors per message.
FDS_PER_MESSAGE = 250
MAX_MESSAGE = 1 << 20
# A SEQPACKET message must fit the socket's send buffer (net.core.wmem_default, ~208 KiB):
# a larger one (a program's code, a selection of many programs) travels in a memfd.
INLINE_BYTES = 64 << 10
MAX_PAYLOAD = 256 << 20

Message = dict[str, Any]


def send(sock: socket.socket, message: Message, fds: list[int]) -> None:
    data = json.dumps({**message, "fd_count": len(fds)}).encode()
    payload = None
    if len(data) > INLINE_BYTES:
        payload = os.memfd_create("bcc_exporter-message", os.MFD_CLOEXEC)
        os.write(payload, data)
        data, fds = json.dumps({"in_fd": True, "fd_count": len(fds) + 1}).encode(), [payload, *fds]
    try:
        chunks = [fds[i : i + FDS_PER_MESSAGE] for i in range(0, len(fds), FDS_PER_MESSAGE)]
        socket.send_fds(sock, [data], chunks[0] if chunks else [])
        for chunk in chunks[1:]:
            socket.send_fds(sock, [b"fds"], chunk)
    finally:
        if payload is not None:
            os.close(payload)


def receive(sock: socket.socket) -> tuple[Message, list[int]]:
    """The next message and its fds; ({}, []) at EOF or for a message sent only in part."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, FDS_PER_MESSAGE)
    if not data:
        return {}, []
    message = json.loads(data)
    if not isinstance(message, dict) or not isinstance(message.get("fd_count"), int):
        close(fds)
        raise ValueError("not a message of this wire")
    while len(fds) < message["fd_count"]:
        more, extra, _, _ = socket.recv_fds(sock, MAX_MESSAGE, FDS_PER_MESSAGE)
        if not more:
            break
        fds.extend(extra)
    if len(fds) != message["fd_count"]:
        # A half-sent program is no program: closing what arrived detaches it.
        close(fds)
        return {}, []
    del message["fd_count"]
    if message.get("in_fd") is True:
        payload, fds = fds[0], fds[1:]
        try:
            message = json.loads(_read_all(payload))
        finally:
            os.close(payload)
        del message["fd_count"]
    return message, fds


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    if size > MAX_PAYLOAD:
        raise ValueError(f"a message of {size} bytes")
    return os.pread(fd, size, 0)


def close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
