"""tracepoint: a tracepoint's event id (text from `uint`) -> `tracepoint:category:name`.

A function attached to a wildcard (`tracepoint:syscalls:sys_enter_open*`) tells the probes
apart by the first field of every tracepoint record, `common_type`: the event id that tracefs
shows in events/<category>/<name>/id. Ids are read once and again on a miss (modules load).
"""

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..tracefs import TRACEFS
from ._base import TEXT_INPUT, DecoderError


class Tracepoint:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size != TEXT_INPUT:
            raise DecoderError("tracepoint decodes an event id: put it after uint")
        self.root = Path(options.get("tracefs") or TRACEFS)
        self._names: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def decode(self, data: bytes) -> bytes:
        name = self._names.get(data)
        if name is None:
            with self._lock:
                self._names = self._read_ids()
            name = self._names.get(data, b"unknown:" + data)
        return name

    def _read_ids(self) -> dict[bytes, bytes]:
        names = {}
        for id_file in self.root.glob("events/*/*/id"):
            event = id_file.parent
            names[id_file.read_bytes().strip()] = (
                f"tracepoint:{event.parent.name}:{event.name}".encode()
            )
        return names
