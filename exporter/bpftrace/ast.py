"""The syntax tree of the bpftrace subset this exporter runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from .diagnostics import Span


@dataclass(frozen=True)
class Int:
    value: int
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Builtin:
    """pid, tid, comm, nsecs, probe, arg0, ... (what bpftrace calls builtins)."""

    name: str
    span: Span


@dataclass(frozen=True)
class Variable:
    name: str  # with its `$`
    span: Span


@dataclass(frozen=True)
class Field:
    """`args->name` (tracepoint arguments)."""

    name: str
    span: Span


@dataclass(frozen=True)
class Member:
    """`curtask->real_parent->tgid`: a field of the current task_struct, read through BTF."""

    path: str  # after `curtask->`: real_parent->tgid
    span: Span


@dataclass(frozen=True)
class Map:
    name: str  # with its `@`; "@" is the unnamed map
    keys: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Expr
    span: Span


@dataclass(frozen=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class Ternary:
    condition: Expr
    then: Expr
    otherwise: Expr
    span: Span


Expr = Int | String | Builtin | Variable | Field | Member | Map | Call | Unary | Binary | Ternary


@dataclass(frozen=True)
class AssignMap:
    target: Map
    value: Expr
    span: Span


@dataclass(frozen=True)
class AssignVar:
    target: Variable
    value: Expr
    span: Span


@dataclass(frozen=True)
class Delete:
    target: Map
    span: Span


@dataclass(frozen=True)
class If:
    condition: Expr
    then: tuple[Statement, ...]
    otherwise: tuple[Statement, ...]
    span: Span


Statement = AssignMap | AssignVar | Delete | If


@dataclass(frozen=True)
class AttachPoint:
    text: str  # as written: tracepoint:syscalls:sys_enter_open*
    span: Span


@dataclass(frozen=True)
class Probe:
    attach: tuple[AttachPoint, ...]
    predicate: Expr | None
    body: tuple[Statement, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Script:
    probes: tuple[Probe, ...]
