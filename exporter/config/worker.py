"""The config worker: `python -I -m exporter.config.worker`, started by the spawner.

Reads [{"path": ..., "text": ...}, ...] (config files the spawner read) on stdin (and reads the
bpftrace scripts of `.bt` sources itself); writes {"programs": [ProgramConfig, ...]} or
{"error": "file: program: field: why"} on stdout. The spawner keeps to the standard library;
this process holds the one config model (pydantic).
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

from ..errors import ConfigError
from ..privsep import safe_files
from ..privsep.selection import INSECURE_FLAG
from . import parse_all, program_config


def validate(files: list[dict[str, str]], insecure: bool = False) -> dict[str, object]:
    read = partial(safe_files.read, insecure=insecure)
    try:
        found = parse_all(((Path(f["path"]), f["text"]) for f in files), read)
    except ConfigError as err:
        return {"error": str(err)}
    return {"programs": [program_config(path, program).to_json() for path, program in found]}


def main() -> None:
    answer = validate(json.load(sys.stdin), INSECURE_FLAG in sys.argv[1:])
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
