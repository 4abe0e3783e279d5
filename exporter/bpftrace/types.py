"""The value types of the subset: 64-bit integers (signed or not) and fixed-size strings."""

from __future__ import annotations

from dataclasses import dataclass

# bpftrace's default string size (BPFTRACE_STRLEN): what str() reads and a key holds.
STRLEN = 64


@dataclass(frozen=True)
class Integer:
    """bpftrace computes in 64 bits; signed only when every operand is (as C does)."""

    signed: bool
    # How the label of a key of this type reads: "probe" (an index into the script's probe
    # names), "ksym" (a kernel address), or plain.
    kind: str = ""

    @property
    def c(self) -> str:
        return "s64" if self.signed else "u64"

    def __str__(self) -> str:
        return "int64" if self.signed else "unsigned int64"


@dataclass(frozen=True)
class String:
    size: int

    def __str__(self) -> str:
        return f"string[{self.size}]"


Type = Integer | String
SIGNED = Integer(True)
UNSIGNED = Integer(False)


def key_size(t: Type) -> int:
    """Bytes a key field of this type takes: 8-byte aligned, so a key struct has no holes."""
    return 8 if isinstance(t, Integer) else (t.size + 7) // 8 * 8
