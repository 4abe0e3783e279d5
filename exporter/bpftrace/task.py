"""`curtask->field`: how the running kernel's BTF types a task_struct field, at translation.

The read itself is a BTF_READ (programs/include/bcc_btf.h), written out with the kernel's
offsets by the compile worker; here only its type matters (signed or not, as bpftrace types it
from the same BTF) and whether it can be read at all, said at the script's position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..btf.fields import Access, FieldError, resolve
from ..btf.kernel import KernelBTF, NoKernelBTF
from . import ast
from .diagnostics import ScriptError

TASK = "struct task_struct"


@dataclass
class TaskFields:
    kernel: KernelBTF | None = None
    _found: dict[str, Access | None] = field(default_factory=dict)

    def signed(self, node: ast.Member) -> bool:
        """Whether the field is signed; ScriptError when it is not an integer or pointer that
        BTF gives. Without BTF, unsigned: the compile worker then reports the program as
        needing BTF, as it does a C program's BTF_READ."""
        if node.path not in self._found:
            try:
                self._found[node.path] = resolve(self.kernel or KernelBTF(), TASK, node.path)
            except NoKernelBTF:
                self._found[node.path] = None
            except FieldError as err:
                raise ScriptError(node.span, f"curtask: {err}") from None
        access = self._found[node.path]
        if access is None:
            return False
        if access.shape == "bytes":
            raise ScriptError(
                node.span,
                f"curtask->{node.path} is an array or a struct: only integer and pointer "
                "fields are supported (comm is the builtin comm)",
            )
        return access.signed
