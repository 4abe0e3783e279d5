"""The daemon's cache directory: results that are costly to find and fixed for a set of
headers or a kernel (the header check's offsets, BTF field layouts), kept across starts.

The files decide what programs read from the kernel, so one that anybody but this user could
have written is not trusted; and a directory that cannot be written (a read-only root file
system without a cache volume) only means the work is done again at every start.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# systemd's CacheDirectory= sets $CACHE_DIRECTORY; elsewhere this one, if it can be written.
CACHE_DIR = Path("/var/cache/bcc_exporter")


def cache_dir() -> Path:
    configured = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    return Path(configured) if configured else CACHE_DIR


def read_private(path: Path) -> Any:
    """The JSON in `path`, or None when there is none, it is not JSON, or another user
    could have written it."""
    try:
        with path.open("rb") as file:
            st = os.fstat(file.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                log.warning("ignoring %s: not owned by this user, or writable by others", path)
                return None
            return json.load(file)
    except (OSError, ValueError):
        return None  # no cache yet, or not one of ours


def write_private(path: Path, data: Any) -> None:
    """Replace `path` with `data` as JSON, whole (for a daemon starting beside), if its
    directory can be made and written."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as file:
            json.dump(data, file)
        os.replace(file.name, path)
    except OSError as err:
        log.debug("cannot write the cache file %s: %s", path, err)
