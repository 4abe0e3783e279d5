"""What the script does with each map: its aggregation, its key types and label names, and
whether it is scratch state (read in an expression, or deleted) rather than a metric."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ast
from .diagnostics import ScriptError, Span
from .types import Integer, Type

# Aggregations and the metric kind each makes; "value" is a plain assignment (@x = expr).
KINDS = {
    "count": "counter",
    "sum": "counter",
    "hist": "histogram",
    "lhist": "histogram",
    "min": "gauge",
    "max": "gauge",
    "avg": "gauge",
    "value": "gauge",
}
# Characters of a map's name after its `@`, plus the `@` (see Maps.use).
MAX_NAME = 25
# A histogram's own: its bucket key, and the `le` it is exported with.
RESERVED_LABELS = ("bucket", "le")
# Builtins whose name is a fine label name.
_NAMED_BUILTINS = {"comm", "pid", "tid", "cpu", "uid", "gid", "probe", "retval"}
_NAMED_CALLS = ("str", "ksym", "usym")


@dataclass
class MapFacts:
    name: str  # as the script spells it: "@start", "@" for the unnamed map
    keys: tuple[Type, ...]
    labels: tuple[str, ...]
    span: Span  # the first use, for diagnostics
    kind: str | None = None
    value: Integer | None = None  # of a plain assignment
    lhist: tuple[int, int, int] | None = None  # min, max, step
    read: bool = False
    deleted: bool = False

    @property
    def c_name(self) -> str:
        """The BPF map's name in C (and in the exporter's map list)."""
        return "at_" + self.name[1:]

    @property
    def scratch(self) -> bool:
        return self.read or self.deleted

    @property
    def value_type(self) -> Integer:
        if self.kind == "value" and self.value is not None:
            return self.value
        return Integer(self.kind in ("sum", "min", "max", "avg"))


@dataclass
class Maps:
    facts: dict[str, MapFacts] = field(default_factory=dict)

    def use(self, node: ast.Map, keys: tuple[Type, ...]) -> MapFacts:
        """The map, with its key types checked against every earlier use."""
        facts = self.facts.get(node.name)
        if facts is None:
            if len(node.name) > MAX_NAME:
                raise ScriptError(
                    node.span,
                    f"map names of up to {MAX_NAME} characters: the kernel counts a map's "
                    "failed updates under its C name (bt_avg_<name>), 31 bytes at most",
                )
            facts = MapFacts(node.name, keys, label_names(node.keys), node.span)
            self.facts[node.name] = facts
        elif facts.keys != keys:
            raise ScriptError(
                node.span,
                f"{node.name} is used with key {_spell(keys)} here and {_spell(facts.keys)} "
                "before: a map has one key type",
            )
        return facts

    def assign(self, node: ast.Map, keys: tuple[Type, ...], kind: str, span: Span) -> MapFacts:
        facts = self.use(node, keys)
        if facts.kind is not None and facts.kind != kind:
            raise ScriptError(
                span,
                f"{node.name} is assigned {_what(kind)} here and {_what(facts.kind)} before: "
                "a map holds one kind of value",
            )
        facts.kind = kind
        return facts

    def check_complete(self) -> None:
        for facts in self.facts.values():
            if facts.kind is None:
                raise ScriptError(facts.span, f"{facts.name} is used but never assigned")


def label_names(keys: tuple[ast.Expr, ...]) -> tuple[str, ...]:
    """comm, pid, args->filename -> filename, curtask->a->b -> b, str(x) -> x's name; others
    and repeats keyN."""
    names: list[str] = []
    for index, key in enumerate(keys):
        name = _label(key)
        taken = name in names or name in RESERVED_LABELS
        names.append(name if name and not taken else f"key{index}")
    return tuple(names)


def _label(key: ast.Expr) -> str | None:
    if isinstance(key, ast.Builtin):
        if key.name in _NAMED_BUILTINS or (key.name.startswith("arg") and key.name[3:].isdigit()):
            return key.name
        return None
    if isinstance(key, ast.Field):
        return key.name
    if isinstance(key, ast.Member):  # curtask->real_parent->pid: pid
        return key.path.replace("->", ".").rsplit(".", 1)[-1]
    if isinstance(key, ast.Call) and key.name in _NAMED_CALLS and key.args:
        return _label(key.args[0])
    return None


def _spell(keys: tuple[Type, ...]) -> str:
    return "[" + ", ".join(str(k) for k in keys) + "]" if keys else "(none)"


def _what(kind: str) -> str:
    return "a value" if kind == "value" else f"{kind}()"
