"""Resolved fields kept across starts, per kernel build, in the daemon's cache directory.

Parsing vmlinux's BTF (~6 MB, 125k types here) takes ~0.2 s and ~30 MB in each compile worker
that needs it; a start that finds every field its programs read in this file parses nothing.
Entries hold only what was found: a field that failed is looked up again (a module may have
been loaded since).
"""

from __future__ import annotations

from pathlib import Path

from ..cache import cache_dir, read_private, write_private
from .fields import Access, parse_path, parse_type, resolve
from .kernel import KernelBTF

CACHE_FILE = "btf_fields.json"


def field_key(spelled_type: str, spelled_path: str) -> str:
    kind, name = parse_type(spelled_type)
    path = "".join(sep + member for sep, member in parse_path(spelled_path))
    return f"{kind.name.lower()} {name}:{path}"


class CachedFields:
    """Fields of the running kernel: from the cache file when it describes this kernel
    build, else from its BTF (and then kept for the next start by save())."""

    def __init__(self, kernel: KernelBTF, directory: Path | None = None) -> None:
        self.kernel = kernel
        self.path = (directory or cache_dir()) / CACHE_FILE
        self._build = kernel.build_id()
        self._fields: dict[str, Access] = {}
        self._added = False
        cached = read_private(self.path)
        try:
            if cached["kernel"] == self._build:
                self._fields = {k: Access.from_json(v) for k, v in cached["fields"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # no cache yet, another kernel's, or not one of ours

    def access(self, spelled_type: str, spelled_path: str) -> Access:
        """FieldError (naming struct, field and kernel) when BTF cannot give it."""
        key = field_key(spelled_type, spelled_path)
        if key not in self._fields:
            self._fields[key] = resolve(self.kernel, spelled_type, spelled_path)
            self._added = True
        return self._fields[key]

    def save(self) -> None:
        """Keep what was resolved, with what the file held, if anything was added. Two
        workers saving at once each write a whole file: one's additions may be lost, to be
        resolved again at the next start."""
        if not self._added:
            return
        fresh = CachedFields(self.kernel, self.path.parent)._fields
        fields = {**fresh, **self._fields}
        write_private(
            self.path,
            {"kernel": self._build, "fields": {k: v.to_json() for k, v in fields.items()}},
        )
        self._added = False
