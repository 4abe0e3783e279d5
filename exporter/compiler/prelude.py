"""The C prelude every program is compiled with: the shared BPF idioms, with their in-kernel
counts of failed map updates and of keys added.

programs/include/bcc_exporter.h says what the idioms are and why they are shaped so; this
module puts the header before a program's code and names the maps the program counts, so that
their series exist (at 0) before the first failure.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

# programs/include/ of the repository, through the link a wheel carries (as
# privsep.selection.BUILTIN_DIR).
HEADER = Path(
    str(resources.files("exporter") / "builtin" / "programs" / "include" / "bcc_exporter.h")
).resolve()
# The per-CPU hashes the header declares: map name (NUL-padded) -> failed updates, and -> keys
# its counter idiom added.
FAILURES_MAP = "exporter_update_failures"
ADDED_MAP = "exporter_keys_added"
# BCC's name for the program text it compiles: diagnostics keep naming it and its own lines.
MAIN_FILE = "/virtual/main.c"
# The macros that name a map whose updates are counted.
MACROS = ("EXPORTER_UPDATE_FAILED", "EXPORTER_MAP")
_COUNTED = re.compile(r"\b(?:" + "|".join(MACROS) + r")\s*\(\s*([A-Za-z_]\w*)\s*\)")


@cache
def _header() -> str:
    return HEADER.read_text(encoding="utf-8")


def with_prelude(code: str) -> str:
    """The code to compile: the header, then the program with its own line numbers."""
    return f'#line 1 "{HEADER.name}"\n{_header()}\n#line 1 "{MAIN_FILE}"\n{code}'


def counted_maps(code: str) -> list[str]:
    """Maps whose failed updates the program counts, in the order it first names them."""
    return list(dict.fromkeys(_COUNTED.findall(code)))
