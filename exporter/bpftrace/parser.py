"""Tokens -> syntax tree: recursive descent over bpftrace's grammar, C's operator precedence.

Hand-written rather than generated: the subset is small, and each refusal (printf, `while`,
`++`) wants its own message at its own token, which is simpler to say here than in a grammar.
"""

from __future__ import annotations

import re

from . import ast
from .diagnostics import ScriptError, Span
from .lexer import Token, tokens

# Binary operators from the loosest to the tightest, as in C (and bpftrace).
PRECEDENCE: tuple[tuple[str, ...], ...] = (
    ("||",),
    ("&&",),
    ("|",),
    ("^",),
    ("&",),
    ("==", "!="),
    ("<", "<=", ">", ">="),
    ("<<", ">>"),
    ("+", "-"),
    ("*", "/", "%"),
)
UNARY = ("!", "~", "-")
COMPOUND = ("+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=")
# An attach point is read as raw text up to a separator, as bpftrace's lexer does: its parts
# (`sys_enter_open*`) are not tokens of the language. A `/` ends it (a predicate follows),
# except in the path of a uprobe or USDT probe (`uprobe:/bin/bash:readline`).
_ATTACH_POINT = re.compile(r"(?:(?:uprobe|uretprobe|usdt|u|ur|U):/[^\s,{}:]*:)?[^\s,{}/]+")

# What a statement of bpftrace can be that an exporter has no use for, and why.
OUTPUT_CALLS = {
    "printf": "printf() has no meaning in an exporter: keep the value in a map, it is exported",
    "print": "print() has no meaning in an exporter: every map is exported as it is",
    "time": "time() has no meaning in an exporter: Prometheus scrapes the maps",
    "exit": "exit() has no meaning in an exporter: the program runs until it is unloaded",
    "clear": "clear() is not supported: exported maps are never reset (Prometheus wants "
    "cumulative values)",
    "zero": "zero() is not supported: exported maps are never reset (Prometheus wants "
    "cumulative values)",
    "system": "system() is not supported: it runs commands from the tracer",
    "cat": "cat() has no meaning in an exporter: it prints a file",
    "join": "join() has no meaning in an exporter: it prints",
}


class Parser:
    def __init__(self, script: str) -> None:
        self.script = script
        self.tokens = tokens(script)
        self.at = 0

    # -- tokens

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.at + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.token
        self.at = min(self.at + 1, len(self.tokens) - 1)
        return token

    def is_(self, text: str) -> bool:
        return self.token.kind == "punct" and self.token.text == text

    def expect(self, text: str, what: str | None = None) -> Token:
        if not self.is_(text):
            raise self.unexpected(what or f"'{text}'")
        return self.take()

    def unexpected(self, wanted: str) -> ScriptError:
        token = self.token
        got = "end of script" if token.kind == "end" else repr(token.text)
        return ScriptError(token.span, f"syntax error: unexpected {got}, expected {wanted}")

    # -- probes

    def script_(self) -> ast.Script:
        probes = []
        while self.token.kind != "end":
            probes.append(self.probe())
        if not probes:
            raise ScriptError(Span(0), "the script has no probes")
        return ast.Script(tuple(probes))

    def probe(self) -> ast.Probe:
        start = self.token.span
        attach = [self.attach_point()]
        while self.is_(","):
            self.take()
            attach.append(self.attach_point())
        predicate = None
        if self.is_("/"):
            self.take()
            predicate = self.expression(in_predicate=True)
            self.expect("/", "'/' closing the predicate")
        body = self.block()
        return ast.Probe(tuple(attach), predicate, body, start)

    def attach_point(self) -> ast.AttachPoint:
        begin = self.token.span.start
        match = _ATTACH_POINT.match(self.script, begin)
        if self.token.kind not in ("ident", "int") or match is None:
            raise self.unexpected("a probe such as tracepoint:syscalls:sys_enter_openat")
        end = match.end()
        while self.token.kind != "end" and self.token.span.start < end:
            self.take()
        return ast.AttachPoint(match.group(), Span(begin, end - begin))

    def block(self) -> tuple[ast.Statement, ...]:
        self.expect("{", "'{' opening the probe's block")
        statements: list[ast.Statement] = []
        while not self.is_("}"):
            if self.is_(";"):
                self.take()
                continue
            statements.append(self.statement())
            if not self.is_("}") and not isinstance(statements[-1], ast.If):
                self.expect(";", "';' or '}'")
        self.take()
        return tuple(statements)

    # -- statements

    def statement(self) -> ast.Statement:
        token = self.token
        if token.kind == "ident" and token.text == "if":
            return self.if_()
        if token.kind == "ident" and token.text in ("unroll", "while", "for", "return"):
            raise ScriptError(
                token.span,
                f"'{token.text}' is not supported: use if/else, or the probe's predicate (/.../)",
            )
        if token.kind == "ident" and self.peek().text == "(":
            call = self.call()
            if call.name == "delete":
                if len(call.args) != 1 or not isinstance(call.args[0], ast.Map):
                    raise ScriptError(call.span, "delete() takes one map element: delete(@m[k])")
                return ast.Delete(call.args[0], call.span)
            if call.name in OUTPUT_CALLS:
                raise ScriptError(call.span, OUTPUT_CALLS[call.name])
            raise ScriptError(call.span, f"{call.name}() is not supported as a statement")
        if token.kind == "map":
            target = self.map_()
            return ast.AssignMap(target, self.assigned(), token.span.to(self.previous_span()))
        if token.kind == "var":
            variable = ast.Variable(token.text, self.take().span)
            return ast.AssignVar(variable, self.assigned(), token.span.to(self.previous_span()))
        raise self.unexpected("a statement (@map = ..., $var = ..., delete(...))")

    def if_(self) -> ast.If:
        start = self.take().span
        self.expect("(", "'(' after if")
        condition = self.expression()
        self.expect(")", "')' closing the condition")
        then = self.block()
        otherwise: tuple[ast.Statement, ...] = ()
        if self.token.kind == "ident" and self.token.text == "else":
            self.take()
            if self.token.kind == "ident" and self.token.text == "if":
                otherwise = (self.if_(),)
            else:
                otherwise = self.block()
        return ast.If(condition, then, otherwise, start.to(self.previous_span()))

    def assigned(self) -> ast.Expr:
        token = self.token
        if token.kind == "punct" and token.text in ("++", "--", *COMPOUND):
            raise ScriptError(
                token.span,
                f"'{token.text}' is not supported: write @x = count() or @x = sum(...)",
            )
        self.expect("=", "'='")
        return self.expression()

    def previous_span(self) -> Span:
        return self.tokens[max(self.at - 1, 0)].span

    # -- expressions

    def expression(self, level: int = 0, in_predicate: bool = False) -> ast.Expr:
        if level == 0:
            return self.ternary(in_predicate)
        return self.binary(level - 1, in_predicate)

    def ternary(self, in_predicate: bool) -> ast.Expr:
        """`a ? b : c`, the loosest of all, right to left as in C."""
        condition = self.binary(0, in_predicate)
        if not self.is_("?"):
            return condition
        self.take()
        then = self.ternary(in_predicate)
        self.expect(":", "':' of the ternary operator")
        otherwise = self.ternary(in_predicate)
        return ast.Ternary(condition, then, otherwise, condition.span.to(otherwise.span))

    def binary(self, level: int, in_predicate: bool) -> ast.Expr:
        if level == len(PRECEDENCE):
            return self.unary(in_predicate)
        left = self.binary(level + 1, in_predicate)
        while self.token.kind == "punct" and self.token.text in PRECEDENCE[level]:
            # In a predicate a `/` ends it: `/args->ret < 0/`. Divide in parentheses there.
            if in_predicate and self.token.text == "/":
                break
            op = self.take()
            right = self.binary(level + 1, in_predicate)
            left = ast.Binary(op.text, left, right, left.span.to(right.span))
        return left

    def unary(self, in_predicate: bool) -> ast.Expr:
        token = self.token
        if token.kind == "punct" and token.text in UNARY:
            self.take()
            operand = self.unary(in_predicate)
            return ast.Unary(token.text, operand, token.span.to(operand.span))
        if token.kind == "punct" and token.text in ("*", "&", "++", "--"):
            raise ScriptError(token.span, f"'{token.text}' is not supported here")
        return self.postfix(self.primary())

    def postfix(self, expr: ast.Expr) -> ast.Expr:
        if _is_builtin(expr, "curtask") and self.is_("->"):
            return self.member(expr)
        if self.is_(".") or (self.is_("->") and not _is_builtin(expr, "args")):
            raise ScriptError(
                self.token.span, "struct fields are supported on args-> and curtask-> only"
            )
        if self.is_("->"):
            self.take()
            name = self.token
            if name.kind != "ident":
                raise self.unexpected("a field name after args->")
            self.take()
            return self.postfix(ast.Field(name.text, expr.span.to(name.span)))
        if self.is_("["):
            raise ScriptError(self.token.span, "indexing is only supported on maps: @m[key]")
        return expr

    def member(self, curtask: ast.Expr) -> ast.Member:
        """`curtask->a.b->c`: the path after `curtask->`, `.` and `->` as in C."""
        path, end = "", curtask.span
        while self.is_("->") or (path and self.is_(".")):
            separator = self.take().text
            name = self.token
            if name.kind != "ident":
                raise self.unexpected(f"a field name after {separator}")
            end = self.take().span
            path += (separator if path else "") + name.text
        return ast.Member(path, curtask.span.to(end))

    def primary(self) -> ast.Expr:
        token = self.token
        if token.kind == "int":
            self.take()
            return ast.Int(int(token.text.replace("_", ""), 0), token.span)
        if token.kind == "string":
            self.take()
            return ast.String(token.value, token.span)
        if token.kind == "map":
            return self.map_()
        if token.kind == "var":
            self.take()
            return ast.Variable(token.text, token.span)
        if token.kind == "ident":
            if self.peek().text == "(":
                return self.call()
            self.take()
            return ast.Builtin(token.text, token.span)
        if self.is_("("):
            self.take()
            inner = self.expression()
            self.expect(")", "')'")
            return inner
        raise self.unexpected("an expression")

    def map_(self) -> ast.Map:
        token = self.take()
        keys: list[ast.Expr] = []
        end = token.span
        if self.is_("["):
            self.take()
            keys.append(self.expression())
            while self.is_(","):
                self.take()
                keys.append(self.expression())
            end = self.expect("]", "',' or ']'").span
        return ast.Map(token.text, tuple(keys), token.span.to(end))

    def call(self) -> ast.Call:
        name = self.take()
        self.expect("(")
        args: list[ast.Expr] = []
        if not self.is_(")"):
            args.append(self.expression())
            while self.is_(","):
                self.take()
                args.append(self.expression())
        end = self.expect(")", "',' or ')'").span
        return ast.Call(name.text, tuple(args), name.span.to(end))


def _is_builtin(expr: ast.Expr, name: str) -> bool:
    return isinstance(expr, ast.Builtin) and expr.name == name


def parse(script: str) -> ast.Script:
    """The script's syntax tree; ScriptError at the first thing that does not parse."""
    return Parser(script).script_()
