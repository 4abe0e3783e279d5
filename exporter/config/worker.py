"""The config worker: `python -I -m exporter.config.worker`, started by the spawner.

Reads [{"path": ..., "text": ...}, ...] (config files the spawner read) on stdin; writes
{"programs": [ProgramConfig, ...]} or {"error": "file: program: field: why"} on stdout. The
spawner keeps to the standard library; this process holds the one config model (pydantic).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError
from . import parse_all, program_config


def validate(files: list[dict[str, str]]) -> dict[str, object]:
    try:
        found = parse_all((Path(f["path"]), f["text"]) for f in files)
    except ConfigError as err:
        return {"error": str(err)}
    return {"programs": [program_config(path, program).to_json() for path, program in found]}


def main() -> None:
    answer = validate(json.load(sys.stdin))
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
