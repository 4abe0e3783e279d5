"""The running kernel's BTF: vmlinux, and each loaded module's split BTF beside it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from ..bpf.btf import BTF

BTF_ROOT = Path("/sys/kernel/btf")


class NoKernelBTF(Exception):
    """The kernel has no BTF (built without CONFIG_DEBUG_INFO_BTF, or older than 5.4), or it
    cannot be read."""


class KernelBTF:
    """What the kernel's BTF says, parsed only when a field is asked for and not cached."""

    def __init__(self, root: Path = BTF_ROOT, release: str | None = None) -> None:
        self.root = root
        self.release = release or os.uname().release
        self._modules: dict[str, BTF] = {}

    @cached_property
    def vmlinux(self) -> BTF:
        try:
            return BTF.load(self.root / "vmlinux")
        except OSError as err:
            raise NoKernelBTF(self._missing(err)) from None

    def blobs(self) -> Iterator[tuple[str, BTF]]:
        """("vmlinux", its BTF), then each module's, in name order: where to look for a
        struct that vmlinux lacks (it lives in a module)."""
        yield "vmlinux", self.vmlinux
        try:
            listed = sorted(self.root.iterdir())
        except OSError:
            return  # vmlinux was readable: a listing that is not only loses the modules
        for path in listed:
            if path.name == "vmlinux":
                continue
            if path.name not in self._modules:
                try:
                    self._modules[path.name] = BTF.load(path, base=self.vmlinux)
                except OSError:
                    continue  # unloaded since it was listed
            yield path.name, self._modules[path.name]

    def build_id(self) -> dict[str, object]:
        """What tells this kernel build from another with the same release (a rebuilt custom
        kernel): the version string (build number and date) and the size of its BTF."""
        try:
            size = (self.root / "vmlinux").stat().st_size
        except OSError as err:
            raise NoKernelBTF(self._missing(err)) from None
        return {"release": self.release, "version": os.uname().version, "vmlinux_bytes": size}

    def _missing(self, err: OSError) -> str:
        if isinstance(err, FileNotFoundError):
            return f"the kernel has no BTF ({self.root}/vmlinux)"
        return f"cannot read the kernel's BTF ({self.root}/vmlinux): {err.strerror}"
