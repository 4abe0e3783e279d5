"""Mount tracefs when missing: tracepoint attach reads event ids from it; fresh boots lack it."""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

TRACEFS = Path("/sys/kernel/tracing")

# Event id -> probe of every tracepoint our programs attached, as the compile workers read
# them: the server, without privileges, cannot read tracefs (mode 0700 root) itself.
ATTACHED_EVENTS: dict[bytes, bytes] = {}


def remember_events(ids: Mapping[str, str]) -> None:
    ATTACHED_EVENTS.update({k.encode(): v.encode() for k, v in ids.items()})


def ensure_mounted(path: Path = TRACEFS) -> bool:
    """Mount tracefs at `path` if nothing is there; return whether its events are readable."""
    # tracefs is mode 0700 root: a daemon that is not root needs CAP_DAC_READ_SEARCH.
    try:
        if (path / "events").is_dir():
            return True
    except PermissionError as denied:
        log.warning(
            "cannot read %s (%s): run as root or with CAP_DAC_READ_SEARCH; "
            "tracepoint probes will not attach",
            path,
            denied.strerror,
        )
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tracefs", str(path).encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        log.warning(
            "tracefs is not mounted at %s and mounting it failed: %s; "
            "tracepoint probes will not attach",
            path,
            os.strerror(err),
        )
        return False
    log.info("mounted tracefs at %s", path)
    return True
