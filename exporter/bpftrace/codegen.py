"""The script's probe blocks -> BCC C: one function per probe (each tracepoint a wildcard names,
each uprobe, USDT probe, profile or kprobe), each running, in script order, the blocks attached
to it; expressions typed as bpftrace types them as they are emitted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..compiler.elf import usdt_note
from ..probes import parse_probe
from . import ast
from .diagnostics import ScriptError, Span
from .maps import MapFacts, Maps
from .parser import OUTPUT_CALLS
from .runtime import HELPERS
from .task import TaskFields
from .tracefs import TracefsError, Tracepoints
from .types import SIGNED, STRLEN, UNSIGNED, Integer, String, Type, key_size

# Entries of each map: bpftrace's default is 4096; a full map refuses new keys, and the loss is
# counted (bcc_exporter_map_update_failures_total).
MAX_ENTRIES = 10240
COMM_SIZE = 16
# Strings live in 8-byte aligned locals, compared a word at a time.
ALIGNED = "__attribute__((aligned(8)))"
AGGREGATIONS = ("count", "sum", "min", "max", "avg", "hist", "lhist", "stats")
RAW_ARGS = 12  # arg0..arg11 of a raw tracepoint, as bpftrace allows
REGISTER_ARGS = 6  # arg0..arg5 of a uprobe or kprobe: the x86-64 argument registers
# bpftrace's short names of probe types.
ALIASES = {
    "t": "tracepoint",
    "rt": "rawtracepoint",
    "u": "uprobe",
    "ur": "uretprobe",
    "U": "usdt",
    "k": "kprobe",
    "kr": "kretprobe",
    "p": "profile",
}
# Probe types whose program gets the registers (struct pt_regs *).
REGISTERS = ("uprobe", "uretprobe", "usdt", "kprobe", "kretprobe")
# USDT argument sizes (the note's `-4@%eax`: negative is signed) -> the C type BCC reads it as.
USDT_TYPES = {1: "u8", 2: "u16", 4: "u32", 8: "u64", -1: "s8", -2: "s16", -4: "s32", -8: "s64"}
# The code of a script whose tracepoints this kernel lacks: bound to the missing one, so that
# the compile worker reports the program unavailable, and the others run.
UNAVAILABLE = "int bt_unavailable(void *ctx)\n{\n    return 0;\n}\n"


@dataclass(frozen=True)
class Target:
    """One probe a block runs on, as bpftrace spells it for `probe`: its type and the fields
    after it (`tracepoint` category and event, `uprobe` path and symbol, ...)."""

    kind: str  # tracepoint, rawtracepoint, uprobe, uretprobe, usdt, kprobe, kretprobe, profile
    fields: tuple[str, ...]
    usdt_sizes: tuple[int, ...] = ()  # of a USDT probe's arguments, negative when signed
    semaphore: bool = False  # a USDT probe behind one: its arguments cannot be read

    @property
    def category(self) -> str:
        return self.fields[0]

    @property
    def event(self) -> str:
        return self.fields[-1]

    @property
    def probe(self) -> str:
        """bpftrace's spelling, and the exporter's for every probe bound to a function (raw
        tracepoints, which BCC attaches itself, are the one type the two spell apart)."""
        return ":".join((self.kind, *self.fields))

    def header(self, index: int, uses_args: bool) -> tuple[str, str | None]:
        """The C function's head, and the function name to bind to the probe when BCC does
        not attach it itself. TRACEPOINT_PROBE only where `args` is read: BCC declares each
        such tracepoint's record from its format file, and some formats name types BCC's
        headers lack (key_serial_t): a wildcard over every syscall would not compile."""
        if self.kind == "rawtracepoint":
            return f"RAW_TRACEPOINT_PROBE({self.event})", None
        if self.kind == "tracepoint" and uses_args:
            return f"TRACEPOINT_PROBE({self.category}, {self.event})", None
        context = {"profile": "struct bpf_perf_event_data"}.get(
            self.kind, "struct pt_regs" if self.kind in REGISTERS else "void"
        )
        return f"int bt_probe_{index}({context} *ctx)", f"bt_probe_{index}"


# Emits the C that writes a string into the buffer it is given.
Writer = Callable[[str], None]


@dataclass
class Translation:
    code: str
    maps: Maps
    probes: list[str]  # probe names by the index the `probe` key holds
    bindings: list[tuple[str, str]]  # (function, probe) the loader attaches


@dataclass
class Function:
    """The C of one function being written: lines, and fresh names for temporaries."""

    target: Target
    index: int  # the target's probe index
    fields: dict[str, Type | None] | None = None  # of the tracepoint, once args is read
    lines: list[str] = field(default_factory=list)
    temps: int = 0
    depth: int = 1
    variables: dict[str, Integer] = field(default_factory=dict)

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def temp(self) -> str:
        self.temps += 1
        return f"t{self.temps}"


class Generator:
    def __init__(self, tracepoints: Tracepoints, task: TaskFields | None = None) -> None:
        self.tracepoints = tracepoints
        self.task = task or TaskFields()
        self.maps = Maps()
        self.missing: list[str] = []  # probes this node does not have (tracepoints, USDT)

    def translate(self, script: ast.Script) -> Translation:
        functions: dict[Target, Function] = {}
        for probe in script.probes:
            for target in self.targets(probe):
                function = functions.get(target)
                if function is None:
                    function = functions[target] = Function(target, len(functions))
                self.block(function, probe)
        if self.missing:
            return Translation(UNAVAILABLE, self.maps, [], [("bt_unavailable", self.missing[0])])
        self.maps.check_complete()
        parts = [HELPERS]
        if any(target.kind in REGISTERS for target in functions):
            # pt_regs and PT_REGS_PARM1...; only where needed, it lengthens the compile.
            parts.insert(0, "#include <uapi/linux/ptrace.h>\n")
        if any(target.kind == "profile" for target in functions):
            # Only ever pointed to: its header pulls in linux/sched.h (programs/profile.bpf.c).
            parts.insert(0, "struct bpf_perf_event_data;\n")
        parts.extend(self.declare(facts) for facts in self.maps.facts.values())
        bindings = []
        for function in functions.values():
            head, bound = function.target.header(function.index, function.fields is not None)
            if bound is not None:
                bindings.append((bound, function.target.probe))
            body = "\n".join(function.lines)
            parts.append(f"{head}\n{{\n{body}\n    return 0;\n}}\n")
        probes = [f.target.probe for f in functions.values()]
        return Translation("\n".join(parts), self.maps, probes, bindings)

    # -- probes

    def targets(self, probe: ast.Probe) -> list[Target]:
        found: list[Target] = []
        for point in probe.attach:
            found.extend(self.expand(point))
        return found

    def expand(self, point: ast.AttachPoint) -> list[Target]:
        kind, _, rest = point.text.partition(":")
        parts = rest.split(":") if rest else []
        kind = ALIASES.get(kind, kind)
        if kind in REGISTERS or kind == "profile":
            return self.dynamic(point, kind, rest)
        if kind == "tracepoint" and len(parts) == 2 and all(parts):
            try:
                found = self.tracepoints.expand(*parts)
            except TracefsError:
                # Not on this kernel: the program is unavailable here, as a C program whose
                # probe is missing (the loader says why); the rest of the script is checked.
                self.missing.append(f"tracepoint:{parts[0]}:{parts[1]}")
                return []
            return [Target("tracepoint", (c, e)) for c, e in found]
        if kind == "rawtracepoint" and len(parts) == 1 and parts[0]:
            if "*" in parts[0] or "?" in parts[0]:
                raise ScriptError(point.span, "wildcards in rawtracepoint probes are not supported")
            if not parts[0].isidentifier():
                raise ScriptError(point.span, f"{parts[0]!r} is not a tracepoint name")
            return [Target("rawtracepoint", (parts[0],))]
        if kind in ("tracepoint", "rawtracepoint"):
            raise ScriptError(
                point.span, f"expected {kind}:{'CATEGORY:' * (kind == 'tracepoint')}EVENT"
            )
        if kind in ("BEGIN", "END", "interval", "i"):
            raise ScriptError(
                point.span,
                f"{kind} probes have no meaning in an exporter: it exports the maps whenever "
                "Prometheus scrapes them",
            )
        raise ScriptError(
            point.span,
            f"{kind} probes are not supported: tracepoint, rawtracepoint, uprobe, uretprobe, "
            "usdt, profile, kprobe and kretprobe are",
        )

    def dynamic(self, point: ast.AttachPoint, kind: str, rest: str) -> list[Target]:
        """A uprobe, USDT probe, profile or kprobe: one function, attached by the loader as a C
        program's probe is (a kprobe on a kernel without kprobes fails there, clearly)."""
        if "*" in rest or "?" in rest:
            raise ScriptError(point.span, f"wildcards in {kind} probes are not supported")
        try:
            probe = parse_probe(f"{kind}:{rest}")
        except ValueError as err:
            raise ScriptError(point.span, str(err)) from None
        if kind != "usdt":
            return [Target(kind, probe.fields)]
        path, provider, name = probe.fields
        try:
            note = usdt_note(path, provider, name)
        except (OSError, ValueError):
            note = None
        if note is None:
            # Not on this node: unavailable here, as a C program's missing probe (the loader
            # says why: no such file, or no such probe in it).
            self.missing.append(f"usdt:{path}:{provider}:{name}")
            return []
        # A probe behind a semaphore is enabled system-wide by the loader, without BCC's
        # argument readers (exporter/compiler/worker.py): its arguments are not available.
        sizes = () if note.semaphore else tuple(_usdt_size(a) for a in note.arguments)
        return [Target(kind, probe.fields, sizes, bool(note.semaphore))]

    def block(self, function: Function, probe: ast.Probe) -> None:
        function.emit(f"{{  // {', '.join(p.text for p in probe.attach)}")
        function.depth += 1
        # $variables live in their probe's block, as in bpftrace: declared (zeroed) at its top,
        # so that one first assigned in an if's branch is there after it too.
        function.variables = {}
        declarations = len(function.lines)
        if probe.predicate is not None:
            condition, typ = self.expr(function, probe.predicate)
            self.need_integer(probe.predicate, typ, "a predicate")
            function.emit(f"if ({condition}) {{")
            function.depth += 1
        for statement in probe.body:
            self.statement(function, statement)
        if probe.predicate is not None:
            function.depth -= 1
            function.emit("}")
        function.lines[declarations:declarations] = [
            "    " * function.depth + f"{typ.c} v_{name[1:]} = 0;"
            for name, typ in function.variables.items()
        ]
        function.depth -= 1
        function.emit("}")

    # -- statements

    def statement(self, f: Function, node: ast.Statement) -> None:
        if isinstance(node, ast.If):
            self.if_(f, node)
        elif isinstance(node, ast.AssignVar):
            value, given = self.expr(f, node.value)
            typ = self.need_integer(node.value, given, "a $variable")
            known = f.variables.setdefault(node.target.name, typ)
            if known != typ:
                raise ScriptError(
                    node.span, f"{node.target.name} holds {known}; cannot assign {typ} to it"
                )
            f.emit(f"v_{node.target.name[1:]} = {value};")
        elif isinstance(node, ast.Delete):
            key, facts = self.key(f, node.target)
            facts.deleted = True
            f.emit(f"{facts.c_name}.delete(&{key});")
        else:
            self.assign_map(f, node)

    def if_(self, f: Function, node: ast.If) -> None:
        condition, typ = self.expr(f, node.condition)
        self.need_integer(node.condition, typ, "if")
        f.emit(f"if ({condition}) {{")
        self.branch(f, node.then)
        if node.otherwise:
            f.emit("} else {")
            self.branch(f, node.otherwise)
        f.emit("}")

    def branch(self, f: Function, statements: tuple[ast.Statement, ...]) -> None:
        f.depth += 1
        for statement in statements:
            self.statement(f, statement)
        f.depth -= 1

    def assign_map(self, f: Function, node: ast.AssignMap) -> None:
        value = node.value
        if isinstance(value, ast.Call) and value.name in AGGREGATIONS:
            self.aggregate(f, node.target, value)
            return
        c, typ = self.expr(f, value)
        if isinstance(typ, String):
            raise ScriptError(value.span, "maps of strings are not supported: maps hold numbers")
        assert isinstance(typ, Integer)
        key, facts = self.key(f, node.target, kind="value", span=node.span)
        if facts.value is not None and facts.value != typ:
            raise ScriptError(node.span, f"{facts.name} holds {facts.value}; cannot assign {typ}")
        facts.value = typ
        v = f.temp()
        f.emit(f"u64 {v} = {c};")
        f.emit(f"if ({facts.c_name}.update(&{key}, &{v}))")
        f.emit(f"    EXPORTER_UPDATE_FAILED({facts.c_name});")

    def aggregate(self, f: Function, target: ast.Map, call: ast.Call) -> None:
        name = call.name
        if name == "stats":
            raise ScriptError(call.span, "stats() is not supported: use count(), sum() and avg()")
        arity = {"count": 0, "lhist": 4}.get(name, 1)
        if len(call.args) != arity:
            raise ScriptError(call.span, f"{name}() takes {arity} argument{'s' * (arity != 1)}")
        operand = "1"
        if name != "count":
            operand, typ = self.expr(f, call.args[0])
            self.need_integer(call.args[0], typ, f"{name}()")
        bounds = self.lhist_bounds(call) if name == "lhist" else None
        bucket: tuple[Type, ...] = (UNSIGNED,) if name in ("hist", "lhist") else ()
        key, facts = self.key(f, target, kind=name, span=call.span, extra=bucket)
        if bounds is not None:
            if facts.lhist is not None and facts.lhist != bounds:
                raise ScriptError(call.span, f"{facts.name} has other lhist() bounds before")
            facts.lhist = bounds
        if name == "hist":
            f.emit(f"{key}.bucket = bt_hist({operand});")
        elif bounds is not None:
            f.emit(f"{key}.bucket = bt_lhist({operand}, {bounds[0]}, {bounds[1]}, {bounds[2]});")
        p, zero = f.temp(), f.temp()
        m = facts.c_name
        if name == "avg":
            self.average(f, facts, key, operand, p)
            return
        if name in ("min", "max"):
            v = f.temp()
            better = "<" if name == "min" else ">"
            f.emit(f"s64 {v} = {operand};")
            f.emit(f"u64 *{p} = {m}.lookup(&{key});")
            f.emit(f"if (!{p}) {{")
            f.emit(f"    if ({m}.update(&{key}, (u64 *)&{v}))")
            f.emit(f"        EXPORTER_UPDATE_FAILED({m});")
            f.emit(f"}} else if ({v} {better} (s64)*{p}) {{")
            f.emit(f"    *{p} = {v};")
            f.emit("}")
            return
        f.emit(f"u64 {zero} = 0, *{p} = {m}.lookup_or_try_init(&{key}, &{zero});")
        f.emit(f"if ({p})")
        f.emit(f"    __sync_fetch_and_add({p}, {'1' if name != 'sum' else operand});")
        f.emit("else")
        f.emit(f"    EXPORTER_UPDATE_FAILED({m});")

    @staticmethod
    def average(f: Function, facts: MapFacts, key: str, operand: str, p: str) -> None:
        """The map holds sum / count, truncated toward zero as bpftrace prints it; both are
        kept in a map beside it (atomic adds: racing CPUs can leave a mean one event stale
        until the next event rewrites it)."""
        m, totals = facts.c_name, f"bt_avg_{facts.name[1:]}"
        v, zero, mean = f.temp(), f.temp(), f.temp()
        f.emit(f"s64 {v} = {operand};")
        f.emit(f"struct bt_avg {zero} = {{}}, *{p} = {totals}.lookup_or_try_init(&{key}, &{zero});")
        f.emit(f"if ({p}) {{")
        f.emit(f"    __sync_fetch_and_add(&{p}->sum, {v});")
        f.emit(f"    __sync_fetch_and_add(&{p}->count, 1);")
        f.emit(f"    u64 {mean} = bt_mean({p}->sum, {p}->count);")
        f.emit(f"    if ({m}.update(&{key}, &{mean}))")
        f.emit(f"        EXPORTER_UPDATE_FAILED({m});")
        f.emit("} else {")
        f.emit(f"    EXPORTER_UPDATE_FAILED({totals});")
        f.emit("}")

    def lhist_bounds(self, call: ast.Call) -> tuple[int, int, int]:
        values = []
        for arg, what in zip(call.args[1:], ("min", "max", "step"), strict=True):
            value = _literal(arg)
            if value is None:
                raise ScriptError(arg.span, f"lhist() {what} must be an integer literal")
            values.append(value)
        low, high, step = values
        if step <= 0:
            raise ScriptError(call.args[3].span, "lhist() step must be >= 1")
        if low < 0:
            raise ScriptError(call.args[1].span, "lhist() min must be non-negative, as in bpftrace")
        if high <= low:
            raise ScriptError(call.args[2].span, "lhist() max must be greater than min")
        if (high - low) // step > 1000:
            raise ScriptError(call.args[3].span, "lhist() makes more than 1000 buckets")
        return low, high, step

    def key(
        self,
        f: Function,
        node: ast.Map,
        kind: str | None = None,
        span: Span | None = None,
        extra: tuple[Type, ...] = (),
    ) -> tuple[str, MapFacts]:
        """A local key struct for the map element, filled; and the map. Strings are written
        straight into the key (a copy would double their stack: 512 bytes in all)."""
        values: list[tuple[str | Writer, Type]] = []
        for item in node.keys:
            source = self.string(f, item)
            values.append((source[1], source[0]) if source else self.expr(f, item))
        types = tuple(t for _, t in values) + extra
        if kind is None:
            facts = self.maps.use(node, types)
        else:
            facts = self.maps.assign(node, types, kind, span or node.span)
        k = f.temp()
        f.emit(f"struct {facts.c_name}_key {k};")
        f.emit(f"__builtin_memset(&{k}, 0, sizeof({k}));")
        for index, (c, _) in enumerate(values):
            if isinstance(c, str):
                f.emit(f"{k}.k{index} = {c};")
            else:
                c(f"{k}.k{index}")
        return k, facts

    def declare(self, facts: MapFacts) -> str:
        fields = []
        for index, typ in enumerate(facts.keys):
            name = (
                "bucket"
                if facts.kind in ("hist", "lhist") and index == len(facts.keys) - 1
                else f"k{index}"
            )
            if isinstance(typ, String):
                fields.append(f"    char {name}[{key_size(typ)}];")
            else:
                fields.append(f"    u64 {name};")
        if not fields:
            fields.append("    u64 k;")  # a map without keys has one element
        body = "\n".join(fields)
        key = f"struct {facts.c_name}_key"
        totals = ""
        if facts.kind == "avg":
            totals = f"BPF_HASH(bt_avg_{facts.name[1:]}, {key}, struct bt_avg, {MAX_ENTRIES});\n"
        return (
            f"{key} {{\n{body}\n}};\nBPF_HASH({facts.c_name}, {key}, u64, {MAX_ENTRIES});\n{totals}"
        )

    # -- expressions: (C expression, type)

    def expr(self, f: Function, node: ast.Expr) -> tuple[str, Type]:
        source = self.string(f, node)
        if source is not None:
            text, write = source
            t = f.temp()
            f.emit(f"char {t}[{key_size(text)}] {ALIGNED} = {{}};")
            write(t)
            return t, text
        if isinstance(node, ast.Int):
            if node.value >= 1 << 63:
                return f"{node.value}ULL", UNSIGNED
            return f"{node.value}LL", SIGNED
        if isinstance(node, ast.String):
            raise ScriptError(node.span, "a string literal is only supported in a comparison")
        if isinstance(node, ast.Builtin):
            return self.builtin(f, node)
        if isinstance(node, ast.Variable):
            typ = f.variables.get(node.name)
            if typ is None:
                raise ScriptError(node.span, f"{node.name} is used before it is assigned")
            return f"v_{node.name[1:]}", typ
        if isinstance(node, ast.Field):
            return self.field(f, node)
        if isinstance(node, ast.Member):
            return self.member(node)
        if isinstance(node, ast.Ternary):
            return self.ternary(f, node)
        if isinstance(node, ast.Map):
            key, facts = self.key(f, node)
            facts.read = True
            p, v = f.temp(), f.temp()
            typ = facts.value_type
            f.emit(f"u64 *{p} = {facts.c_name}.lookup(&{key});")
            f.emit(f"{typ.c} {v} = {p} ? *{p} : 0;")
            return v, Integer(typ.signed)
        if isinstance(node, ast.Call):
            return self.call(f, node)
        if isinstance(node, ast.Unary):
            c, given = self.expr(f, node.operand)
            typ = self.need_integer(node.operand, given, f"'{node.op}'")
            if node.op == "!":
                return f"((s64)!{c})", SIGNED
            return f"(({typ.c}){node.op}{c})", Integer(typ.signed)
        return self.binary(f, node)

    def ternary(self, f: Function, node: ast.Ternary) -> tuple[str, Type]:
        # Both values are computed before the choice: reads without side effects, as `&&`.
        condition, ct = self.expr(f, node.condition)
        self.need_integer(node.condition, ct, "a ternary's condition")
        then, tt = self.expr(f, node.then)
        otherwise, ot = self.expr(f, node.otherwise)
        if not isinstance(tt, Integer) or not isinstance(ot, Integer):
            raise ScriptError(node.span, "a ternary of strings is not supported: maps hold numbers")
        typ = Integer(tt.signed and ot.signed)
        return f"(({typ.c})({condition} ? ({typ.c}){then} : ({typ.c}){otherwise}))", typ

    def member(self, node: ast.Member) -> tuple[str, Type]:
        """`curtask->path` through BTF_READ: the running kernel's offsets, whatever headers
        BCC compiles with (exporter/btf); typed as BTF types the field."""
        signed = self.task.signed(node)
        read = f"BTF_READ((void *)bpf_get_current_task(), struct task_struct, {node.path})"
        typ = Integer(signed)
        return f"(({typ.c}){read})", typ

    def binary(self, f: Function, node: ast.Binary) -> tuple[str, Type]:
        if isinstance(node.right, ast.String) or isinstance(node.left, ast.String):
            return self.compare_literal(f, node)
        left, lt = self.expr(f, node.left)
        if node.op in ("&&", "||"):
            # Both sides are evaluated: map reads have no side effects, as in bpftrace's codegen.
            right, rt = self.expr(f, node.right)
            return f"((s64)({left} {node.op} {right}))", SIGNED
        right, rt = self.expr(f, node.right)
        if isinstance(lt, String) and isinstance(rt, String):
            return self.compare_strings(node, (left, lt), (right, rt))
        if isinstance(lt, String) or isinstance(rt, String):
            raise ScriptError(node.span, f"cannot compare {lt} with {rt}")
        assert isinstance(lt, Integer) and isinstance(rt, Integer)
        typ = Integer(lt.signed and rt.signed)
        if node.op in ("/", "%"):  # bpftrace divides unsigned, whatever the signs
            return f"(({typ.c})((u64){left} {node.op} (u64){right}))", typ
        if node.op in ("==", "!=", "<", "<=", ">", ">="):
            return f"((s64)(({typ.c}){left} {node.op} ({typ.c}){right}))", SIGNED
        return f"(({typ.c}){left} {node.op} ({typ.c}){right})", typ

    def compare_literal(self, f: Function, node: ast.Binary) -> tuple[str, Type]:
        """`comm == "bash"`: equal when the bytes up to the literal's NUL are."""
        literal, other = (
            (node.right, node.left)
            if isinstance(node.right, ast.String)
            else (node.left, node.right)
        )
        assert isinstance(literal, ast.String)
        if node.op not in ("==", "!="):
            raise ScriptError(node.span, f"strings compare with == and != only, not {node.op}")
        c, typ = self.expr(f, other)
        if not isinstance(typ, String):
            raise ScriptError(node.span, f"cannot compare {typ} with a string")
        # Word by word (strings are 8-byte aligned locals): a chain of byte compares this
        # long made the verifier refuse the program (E2BIG).
        data = (literal.value.encode() + b"\0")[: typ.size]
        words = []
        for at in range(0, len(data), 8):
            chunk = data[at : at + 8]
            value = int.from_bytes(chunk, "little")
            mask = (1 << (8 * len(chunk))) - 1
            words.append(f"(((u64 *){c})[{at // 8}] & {mask:#x}ULL) == {value:#x}ULL")
        same = " && ".join(words)
        return f"((s64)({'' if node.op == '==' else '!'}({same})))", SIGNED

    @staticmethod
    def compare_strings(
        node: ast.Binary, left: tuple[str, String], right: tuple[str, String]
    ) -> tuple[str, Type]:
        """Two strings, over the shorter one's size, as bpftrace compares them: `str(p, 4) ==
        str(p)` holds when p's string is 4 characters or fewer. Both are zeroed 8-byte aligned
        locals past their NUL, so comparing every byte is comparing up to the NUL."""
        if node.op not in ("==", "!="):
            raise ScriptError(node.span, f"strings compare with == and != only, not {node.op}")
        size = min(left[1].size, right[1].size)
        words = []
        for at in range(0, size, 8):
            mask = (1 << (8 * min(8, size - at))) - 1
            index = at // 8
            words.append(
                f"(((u64 *){left[0]})[{index}] & {mask:#x}ULL) == "
                f"(((u64 *){right[0]})[{index}] & {mask:#x}ULL)"
            )
        same = " && ".join(words)
        return f"((s64)({'' if node.op == '==' else '!'}({same})))", SIGNED

    def string(self, f: Function, node: ast.Expr) -> tuple[String, Writer] | None:
        """A string-valued expression (comm, str(), a char array of args): its type, and what
        writes it into a zeroed buffer the caller names (a key's field, or a temporary)."""
        if isinstance(node, ast.Builtin) and node.name == "comm":
            return String(COMM_SIZE), lambda to: f.emit(
                f"bpf_get_current_comm(&{to}, {COMM_SIZE});"
            )
        if isinstance(node, ast.Field):
            c, typ = self.field(f, node)
            if isinstance(typ, String):
                return typ, lambda to: f.emit(f"__builtin_memcpy(&{to}, {c}, {typ.size});")
            return None
        if not (isinstance(node, ast.Call) and node.name == "str"):
            return None
        if not 1 <= len(node.args) <= 2:
            raise ScriptError(node.span, "str() takes a pointer and an optional length")
        size = STRLEN
        if len(node.args) == 2:
            # str(p, n) holds n characters and the NUL, 64 bytes at most, as bpftrace 0.17
            # reads it (n + 1 bytes); the key keeps only those.
            limit = node.args[1]
            if not isinstance(limit, ast.Int):
                raise ScriptError(limit.span, "str() length must be an integer literal")
            size = min(limit.value + 1, STRLEN)
        c, typ = self.expr(f, node.args[0])
        if isinstance(typ, String):
            read = f"bpf_probe_read_kernel_str(&{{}}, {min(size, typ.size)}, {c});"
        else:
            read = f"bpf_probe_read_str(&{{}}, {size}, (void *){c});"
        return String(size), lambda to: f.emit(read.format(to))

    def builtin(self, f: Function, node: ast.Builtin) -> tuple[str, Type]:
        name = node.name
        simple = {
            "pid": "(bpf_get_current_pid_tgid() >> 32)",
            "tid": "(u64)(u32)bpf_get_current_pid_tgid()",
            "uid": "(u64)(u32)bpf_get_current_uid_gid()",
            "gid": "(bpf_get_current_uid_gid() >> 32)",
            "cpu": "(u64)bpf_get_smp_processor_id()",
            "nsecs": "bpf_ktime_get_ns()",
        }
        if name in simple:
            return simple[name], UNSIGNED
        if name == "probe":
            return f"{f.index}ULL", Integer(False, "probe")
        if name == "curtask":
            return "(u64)bpf_get_current_task()", UNSIGNED
        if name.startswith("arg") and name[3:].isdigit():
            return self.argument(f, node, int(name[3:]))
        if name == "retval":
            if f.target.kind not in ("uretprobe", "kretprobe"):
                raise ScriptError(
                    node.span,
                    "the retval builtin can only be used with kretprobe and uretprobe probes",
                )
            return "(u64)PT_REGS_RC(ctx)", UNSIGNED
        if name == "args":
            raise ScriptError(node.span, "args is only supported as args->field")
        raise ScriptError(node.span, f"the {name} builtin is not supported")

    def argument(self, f: Function, node: ast.Builtin, index: int) -> tuple[str, Type]:
        """argN, as bpftrace reads it for the probe type: unsigned 64 bits."""
        kind = f.target.kind
        if kind == "rawtracepoint":
            if index >= RAW_ARGS:
                raise ScriptError(
                    node.span, f"{node.name}: raw tracepoints have arg0 to arg{RAW_ARGS - 1}"
                )
            return f"(u64)ctx->args[{index}]", UNSIGNED
        if kind in ("uprobe", "kprobe"):
            if index >= REGISTER_ARGS:
                raise ScriptError(
                    node.span, f"{node.name}: {kind}s have arg0 to arg{REGISTER_ARGS - 1}"
                )
            return f"(u64)PT_REGS_PARM{index + 1}(ctx)", UNSIGNED
        if kind == "usdt":
            sizes = f.target.usdt_sizes
            if f.target.semaphore:
                raise ScriptError(
                    node.span,
                    f"{node.name}: {f.target.probe} has a semaphore, and the arguments of such "
                    "USDT probes are not supported (it is enabled in every process, without "
                    "BCC's argument readers)",
                )
            if index >= len(sizes):
                raise ScriptError(
                    node.span, f"{node.name}: {f.target.probe} has {len(sizes)} arguments"
                )
            # BCC's reader wants a destination of the argument's exact size; a signed one is
            # widened with its sign, as bpftrace does.
            if sizes[index] not in USDT_TYPES:
                raise ScriptError(
                    node.span, f"{node.name}: an argument of {abs(sizes[index])} bytes"
                )
            v = f.temp()
            f.emit(f"{USDT_TYPES[sizes[index]]} {v} = 0;")
            f.emit(f"bpf_usdt_readarg({index + 1}, ctx, &{v});")
            return f"((u64){v})" if sizes[index] > 0 else f"((u64)(s64){v})", UNSIGNED
        if kind == "tracepoint":
            raise ScriptError(
                node.span, f"{node.name} is not available in tracepoints: use args->field"
            )
        raise ScriptError(node.span, f"{node.name} is not available in {kind} probes")

    def field(self, f: Function, node: ast.Field) -> tuple[str, Type]:
        if f.target.kind != "tracepoint":
            raise ScriptError(node.span, "args->field is only available in tracepoint probes")
        if f.fields is None:
            try:
                f.fields = self.tracepoints.fields(f.target.category, f.target.event)
            except TracefsError as err:
                raise ScriptError(node.span, f"{f.target.probe}: {err}") from None
        if node.name not in f.fields:
            raise ScriptError(node.span, f"{f.target.probe} has no field {node.name!r}")
        typ = f.fields[node.name]
        if typ is None:
            raise ScriptError(node.span, f"args->{node.name}: its type is not supported")
        if isinstance(typ, String):
            return f"args->{node.name}", typ  # for string(): copied where it is wanted
        return f"(({typ.c})args->{node.name})", typ

    def call(self, f: Function, node: ast.Call) -> tuple[str, Type]:
        if node.name == "ksym":
            if len(node.args) != 1:
                raise ScriptError(node.span, "ksym() takes one address")
            c, typ = self.expr(f, node.args[0])
            self.need_integer(node.args[0], typ, "ksym()")
            return c, Integer(False, "ksym")
        if node.name in AGGREGATIONS:
            raise ScriptError(
                node.span,
                f"{node.name}() is only supported as a map's value: @m = {node.name}(...)",
            )
        if node.name in OUTPUT_CALLS:
            raise ScriptError(node.span, OUTPUT_CALLS[node.name])
        raise ScriptError(node.span, f"{node.name}() is not supported")

    @staticmethod
    def need_integer(node: ast.Expr, typ: Type, where: str) -> Integer:
        if not isinstance(typ, Integer):
            raise ScriptError(node.span, f"{where} takes an integer, not a {typ}")
        return typ


def _usdt_size(spec: str) -> int:
    """`-4@%eax` -> -4; a spec without a size (the notes' first version) is 8 bytes, as BCC
    reads it."""
    size, at, _ = spec.partition("@")
    return int(size) if at and size.lstrip("-").isdigit() else 8


def _literal(node: ast.Expr) -> int | None:
    """An integer literal's value, negative ones included (-1 parses as a unary minus)."""
    if isinstance(node, ast.Int):
        return node.value
    if isinstance(node, ast.Unary) and node.op == "-" and isinstance(node.operand, ast.Int):
        return -node.operand.value
    return None
