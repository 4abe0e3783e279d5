"""tracepoint: a tracepoint's event id (text from `uint`) -> `tracepoint:category:name`.

A function attached to a wildcard (`tracepoint:syscalls:sys_enter_open*`) tells the probes
apart by `bpf_get_attach_cookie(ctx)`: the loader links each tracepoint with its event id, as
tracefs shows it in events/<category>/<name>/id (or, to a server without privileges, as the
compile worker that attached it read it there). The ids are read on first use and again on a
miss (a module loaded since), at most every MIN_REFRESH_SECONDS (see _refresh.py).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..tracefs import ATTACHED_EVENTS, TRACEFS
from ._base import TEXT_INPUT, DecoderError, Unresolved
from ._refresh import Snapshot


class Tracepoint:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size != TEXT_INPUT:
            raise DecoderError("tracepoint decodes an event id: put it after uint")
        self.root = Path(options.get("tracefs") or TRACEFS)
        self._names = Snapshot(self._read_ids)

    def decode(self, data: bytes) -> bytes:
        reads = self._names.reads
        name = self._names.current().get(data)
        if name is None:
            name = self._names.refresh().get(data)
        if name is not None:
            return name
        if self._names.reads == reads:  # the re-read was rate-limited: ask again later
            raise Unresolved(b"unknown:" + data)
        return b"unknown:" + data

    def _read_ids(self) -> dict[bytes, bytes]:
        # What tracefs says when this process may read it (root, or no privilege separation),
        # else what the compile workers said of the tracepoints they attached.
        names = dict(ATTACHED_EVENTS)
        for id_file in self.root.glob("events/*/*/id"):
            event = id_file.parent
            names[id_file.read_bytes().strip()] = (
                f"tracepoint:{event.parent.name}:{event.name}".encode()
            )
        return names
