"""Rule expressions and templates: simpleeval's grammar, compiled once, run fast.

Why not just call simpleeval?  simpleeval walks the syntax tree on every
evaluation and only finds an unsupported construct when it reaches it.  A
rule's condition runs on every matching event (the bus targets 100,000
events/s), and a broken rule should be refused when it loads, not at 3 a.m.

So an expression is handled in two steps:

1. **Validation** (load time).  ``ast.parse`` the text, then walk the tree
   against an allow-list that is simpleeval's grammar (``EvalWithCompoundTypes``
   without comprehensions) and its limits: no names starting with ``_``, none
   of simpleeval's ``DISALLOW_METHODS``, string literals no longer than
   ``MAX_STRING_LENGTH``, bounded length and nesting.  Anything else is an
   :class:`ExpressionSyntaxError` that names the construct.
2. **Compilation**.  The validated tree is rewritten so that it can only
   touch what we hand it: every user name becomes a lookup in the event's
   data dict (``x`` -> ``_d["x"]``), ``event`` becomes the envelope,
   attribute access goes through :func:`_attr` (simpleeval's per-type
   allow-list), method calls through :func:`_method`, the operators that can
   allocate without bound (``+ * ** << >> %``) through simpleeval-style
   ``safe_*`` functions, and calls only to functions of the library.  The
   rewritten tree is compiled to a Python lambda with empty builtins.

The escape corpus in ``tests/sandbox/`` is the proof that both steps hold.

Templates are strings with ``{expression}`` holes; ``{{`` and ``}}`` are
literal braces.  A template that is exactly one hole keeps the value's type
(so ``"{count}"`` renders an int into a JSON body); otherwise holes are
joined as text, with ``None`` rendered as the empty string.

A template that fails on an event names the hole that failed (``division by
zero in '{total / count}'``).  Finding it costs nothing while rendering
succeeds: each hole's code is compiled as its own line of the lambda
(line ``n + 1`` for hole ``n``), so the traceback of a failure says which
hole was running.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import TracebackType
from typing import Any, NoReturn

import simpleeval

from ccbus.config.suggest import did_you_mean
from ccbus.errors import EvaluationError, ExpressionSyntaxError, MissingField

__all__ = [
    "CompiledExpression",
    "CompiledTemplate",
    "ExpressionCompiler",
    "MAX_EXPRESSION_LENGTH",
    "MAX_NESTING",
    "bounded_text",
    "check_size",
    "checked_text",
]

#: Longest expression text accepted (a rule condition is a line, not a program).
MAX_EXPRESSION_LENGTH = 2000
#: Deepest syntax tree accepted.
MAX_NESTING = 64
#: Longest template, and most holes in one: bounds what one render can build.
MAX_TEMPLATE_LENGTH = 10_000
MAX_TEMPLATE_HOLES = 100
#: Most items a library function builds into one list (simpleeval's comprehension limit).
MAX_ITEMS = simpleeval.MAX_COMPREHENSION_LENGTH
#: A power whose result would need more bits than this is refused (simpleeval's
#: MAX_POWER alone lets ``4000000 ** 4000000`` run for half a minute).
MAX_POWER_BITS = 100_000

_MAX_STRING = simpleeval.MAX_STRING_LENGTH

_ALLOWED_BINOPS: dict[type[ast.operator], str | None] = {
    # None: Python's own operator is safe (result bounded by the operands).
    ast.Sub: None,
    ast.Div: None,
    ast.FloorDiv: None,
    ast.BitOr: None,
    ast.BitXor: None,
    ast.BitAnd: None,
    # A name: routed through the guard of that name.
    ast.Add: "_add",
    ast.Mult: "_mul",
    ast.Pow: "_pow",
    ast.Mod: "_mod",
    ast.LShift: "_lshift",
    ast.RShift: "_rshift",
}
_ALLOWED_UNARY = (ast.Not, ast.USub, ast.UAdd, ast.Invert)

# simpleeval's BASIC_ALLOWED_ATTRS (its 2.x default), minus what a rule must
# not do: mutate the event that other rules share, or allocate without bound
# (``"x".ljust(10**9)``, ``(1).to_bytes(10**9)``), or reach format strings.
_MUTATING_OR_UNBOUNDED = {
    "append",
    "clear",
    "extend",
    "insert",
    "pop",
    "popitem",
    "remove",
    "reverse",
    "sort",
    "setdefault",
    "update",
    "add",
    "discard",
    "difference_update",
    "intersection_update",
    "symmetric_difference_update",
    "center",
    "ljust",
    "rjust",
    "zfill",
    "expandtabs",
    "to_bytes",
    "from_bytes",
    "format",
    "format_map",
    "maketrans",
    "translate",
    "encode",
    "fromkeys",
}
_ALLOWED_ATTRS: dict[type, frozenset[str]] = {
    t: frozenset(names - _MUTATING_OR_UNBOUNDED)
    for t, names in simpleeval.BASIC_ALLOWED_ATTRS.items()
    if t is not None
}
_ALLOWED_ATTRS[datetime] = frozenset(
    {
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "second",
        "microsecond",
        "weekday",
        "isoweekday",
        "isoformat",
        "timestamp",
        "date",
        "tzname",
    }
)
_ALLOWED_ATTRS[date] = frozenset({"year", "month", "day", "weekday", "isoweekday", "isoformat"})
_ALLOWED_ATTRS[timedelta] = frozenset({"days", "seconds", "total_seconds"})


class EnvelopeView:
    """What an expression sees as ``event``: the envelope's attributes, read-only.

    The router builds one per event from :class:`ccbus.events.envelope.Event`; the
    allow-list below is the whole surface an expression can reach.
    """

    __slots__ = ("_event",)
    FIELDS = frozenset(
        {"id", "source", "type", "time", "subject", "data", "vendor", "receivedat", "extensions"}
    )

    def __init__(self, event: Any) -> None:
        self._event = event

    def get(self, name: str) -> Any:
        return getattr(self._event, name)

    def __repr__(self) -> str:  # never an object address in a rendered message
        return f"event({self._event.type}, id={self._event.id})"


# ---------------------------------------------------------------------------
# Runtime guards the compiled code calls. Each mirrors a simpleeval safe_*.


def _attr(obj: Any, name: str) -> Any:
    """``obj.name`` under simpleeval's rules; dict keys win over dict methods."""
    # Exact type checks first: they are the common cases and far cheaper than
    # the ABC check isinstance(obj, Mapping) (this runs for every dotted name).
    if type(obj) is dict:
        if name in obj:
            return obj[name]
        raise MissingField(f"no key {name!r}")
    if type(obj) is EnvelopeView:
        if name in EnvelopeView.FIELDS:
            return obj.get(name)
        raise EvaluationError(f"event has no attribute {name!r}")
    if isinstance(obj, Mapping):
        if name in obj:
            return obj[name]
        raise MissingField(f"no key {name!r}")
    allowed = _ALLOWED_ATTRS.get(type(obj))
    if allowed is None or name not in allowed:
        raise EvaluationError(f"'.{name}' is not available on {type(obj).__name__}")
    value = getattr(obj, name)
    if callable(value):
        raise EvaluationError(f"'.{name}' is a method: call it as .{name}(...)")
    return value


def _method(obj: Any, name: str) -> Callable[..., Any]:
    """``obj.name`` for a call: only the allow-listed methods of plain types."""
    if isinstance(obj, Mapping) and type(obj) is not dict and name in obj:
        raise EvaluationError(f"{name!r} is a key, not a method")
    allowed = _ALLOWED_ATTRS.get(type(obj))
    if allowed is None or name not in allowed:
        raise EvaluationError(f"'.{name}()' is not available on {type(obj).__name__}")
    method = getattr(obj, name)
    if name == "replace":
        return _guarded_replace(obj)
    if name == "join":
        return _guarded_join(obj)
    if name in _SIZED_METHODS and isinstance(obj, str):
        return _sized(method, name)
    return method  # type: ignore[no-any-return]


#: String methods whose result can outgrow their input: case changes (``"ß".upper()`` is
#: ``"SS"``, some characters become three) and splits (a list per separator).
_SIZED_METHODS = frozenset(
    {"upper", "lower", "casefold", "title", "capitalize", "swapcase",
     "split", "rsplit", "splitlines"}
)


def _sized(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``method`` with its result held to the documented limits (text, items)."""
    splits = name in ("split", "rsplit")

    def call(*args: Any, **kwargs: Any) -> Any:
        if splits and len(args) < 2 and "maxsplit" not in kwargs:
            kwargs["maxsplit"] = MAX_ITEMS  # one more piece than allowed: enough to refuse
        result = method(*args, **kwargs)
        if isinstance(result, str):
            return checked_text(result, f".{name}()")
        if len(result) > MAX_ITEMS:
            raise EvaluationError(f".{name}() would build a list of more than {MAX_ITEMS:,} items")
        return result

    return call


def _guarded_replace(text: str) -> Callable[..., str]:
    def replace(old: str, new: str, count: int = -1) -> str:
        hits = text.count(old) if count < 0 else min(count, text.count(old))
        if len(text) + hits * (len(new) - len(old)) > _MAX_STRING:
            raise EvaluationError("replace() would build a string over the size limit")
        return text.replace(old, new, count)

    return replace


def _guarded_join(sep: str) -> Callable[[Any], str]:
    def join(items: Any) -> str:
        parts = list(items)
        check_size(parts)
        if sum(len(p) for p in parts if isinstance(p, str)) + len(sep) * len(parts) > _MAX_STRING:
            raise EvaluationError("join() would build a string over the size limit")
        return sep.join(parts)

    return join


def _add(a: Any, b: Any) -> Any:
    try:
        return simpleeval.safe_add(a, b)
    except simpleeval.IterableTooLong as err:
        raise EvaluationError(str(err)) from None


def _mul(a: Any, b: Any) -> Any:
    # Repeating a list or tuple nests without bound once str() walks it
    # (``[[1]*100000]*100000``); strings alone are bounded by simpleeval's limit.
    if isinstance(a, list | tuple | dict | set) or isinstance(b, list | tuple | dict | set):
        raise EvaluationError("repeating a list with * is not available")
    if type(a) is int and type(b) is int and a.bit_length() + b.bit_length() > MAX_POWER_BITS:
        raise EvaluationError(
            f"multiplying a {a.bit_length()}-bit by a {b.bit_length()}-bit number is too large"
        )
    try:
        return simpleeval.safe_mult(a, b)
    except simpleeval.IterableTooLong as err:
        raise EvaluationError(str(err)) from None


def _pow(a: Any, b: Any) -> Any:
    if isinstance(a, int | float) and isinstance(b, int | float):
        too_large = (
            abs(b) > simpleeval.MAX_POWER
            or abs(a) > simpleeval.MAX_POWER
            or (abs(a) > 1 and b > 0 and b * math.log2(abs(a)) > MAX_POWER_BITS)
        )
        if too_large:  # describe by size: the operands themselves may be huge
            raise EvaluationError(f"a power of {_size(a)} to {_size(b)} is too large")
    return a**b


def _size(number: float) -> str:
    if isinstance(number, int) and abs(number) >= 10**12:
        return f"a {number.bit_length()}-bit number"
    return repr(number)


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str | bytes):
        raise EvaluationError("'%' string formatting is not available: use a template")
    return a % b


def _lshift(a: Any, b: Any) -> Any:
    try:
        return simpleeval.safe_lshift(a, b)
    except simpleeval.NumberTooHigh as err:
        raise EvaluationError(str(err)) from None


def _rshift(a: Any, b: Any) -> Any:
    try:
        return simpleeval.safe_rshift(a, b)
    except simpleeval.NumberTooHigh as err:
        raise EvaluationError(str(err)) from None


def check_size(value: Any, limit: int = _MAX_STRING) -> None:
    """Refuse containers with more than ``limit`` elements in all, however nested.

    Walks at most ``limit`` elements, so the check itself is bounded.
    """
    budget = limit
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            budget -= len(item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            budget -= len(item)
            stack.extend(item)
        elif isinstance(item, str | bytes):
            budget -= len(item) // 64
        if budget < 0:
            raise EvaluationError("value is too large to render")


def checked_text(text: str, what: str = "the result") -> str:
    """``text``, or an error when it is longer than the string limit."""
    if len(text) > _MAX_STRING:
        raise EvaluationError(f"{what} would be over the limit of {_MAX_STRING:,} characters")
    return text


def bounded_text(value: Any) -> str:
    """Render a value as template text: None is empty, containers are JSON, size-checked."""
    if value is None:
        return ""
    if type(value) is str:
        return value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict | list | tuple):
        check_size(value)
        return json.dumps(value, default=str, ensure_ascii=False)
    if type(value) is EnvelopeView:  # `{event}`: the whole event as CloudEvents JSON
        document = value.get("to_cloudevent")()
        check_size(document)
        return json.dumps(document, default=str, ensure_ascii=False)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 14_000:
        raise EvaluationError("integer is too large to render")
    return str(value)


_RUNTIME: dict[str, Any] = {
    "_attr": _attr,
    "_method": _method,
    "_add": _add,
    "_mul": _mul,
    "_pow": _pow,
    "_mod": _mod,
    "_lshift": _lshift,
    "_rshift": _rshift,
    "_text": bounded_text,
}

# ---------------------------------------------------------------------------
# Validation and rewriting


class _Rewriter:
    """Validate a parsed expression and rewrite it to the guarded form.

    One pass does both, so nothing can be rewritten that was not validated.
    """

    def __init__(self, source: str, functions: Mapping[str, Callable[..., Any]]) -> None:
        self.source = source
        self.functions = functions
        self.used_functions: set[str] = set()
        self.names: set[str] = set()

    def fail(self, node: ast.AST, reason: str) -> ExpressionSyntaxError:
        col = getattr(node, "col_offset", None)
        return syntax_error(reason, self.source, None if col is None else col + 1)

    def visit(self, node: ast.expr, depth: int = 0) -> ast.expr:
        if depth > MAX_NESTING:
            raise self.fail(node, f"nested deeper than {MAX_NESTING} levels")
        d = depth + 1
        match node:
            case ast.Constant(value=value):
                if isinstance(value, bytes) or value is Ellipsis:
                    raise self.fail(node, f"{type(value).__name__} literals are not available")
                if isinstance(value, str) and len(value) > _MAX_STRING:
                    raise self.fail(node, "string literal is too long")
                return node
            case ast.Name(id=name):
                return self._name(node, name)
            case ast.UnaryOp(op=op, operand=operand):
                if not isinstance(op, _ALLOWED_UNARY):
                    raise self.fail(node, f"operator {type(op).__name__} is not available")
                return ast.UnaryOp(op=op, operand=self.visit(operand, d))
            case ast.BinOp(left=left, op=op, right=right):
                if type(op) not in _ALLOWED_BINOPS:
                    raise self.fail(node, f"operator {type(op).__name__} is not available")
                guard = _ALLOWED_BINOPS[type(op)]
                lhs, rhs = self.visit(left, d), self.visit(right, d)
                if guard is None:
                    return ast.BinOp(left=lhs, op=op, right=rhs)
                return _call(guard, lhs, rhs)
            case ast.BoolOp(op=op, values=values):
                return ast.BoolOp(op=op, values=[self.visit(v, d) for v in values])
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                return ast.Compare(
                    left=self.visit(left, d),
                    ops=ops,
                    comparators=[self.visit(c, d) for c in comparators],
                )
            case ast.IfExp(test=test, body=body, orelse=orelse):
                return ast.IfExp(
                    test=self.visit(test, d),
                    body=self.visit(body, d),
                    orelse=self.visit(orelse, d),
                )
            case ast.Call():
                return self._call(node, d)
            case ast.Attribute(value=value, attr=attr):
                self._check_attr_name(node, attr)
                return _call("_attr", self.visit(value, d), ast.Constant(attr))
            case ast.Subscript(value=value, slice=index):
                return ast.Subscript(
                    value=self.visit(value, d), slice=self.visit(index, d), ctx=ast.Load()
                )
            case ast.Slice(lower=lower, upper=upper, step=step):
                return ast.Slice(
                    lower=self.visit(lower, d) if lower else None,
                    upper=self.visit(upper, d) if upper else None,
                    step=self.visit(step, d) if step else None,
                )
            case ast.List(elts=elts) | ast.Tuple(elts=elts) | ast.Set(elts=elts):
                items = [self.visit(e, d) for e in elts]
                if isinstance(node, ast.List):
                    return ast.List(elts=items, ctx=ast.Load())
                if isinstance(node, ast.Tuple):
                    return ast.Tuple(elts=items, ctx=ast.Load())
                return ast.Set(elts=items)
            case ast.Dict(keys=keys, values=values):
                if any(k is None for k in keys):
                    raise self.fail(node, "'**' unpacking is not available")
                return ast.Dict(
                    keys=[self.visit(k, d) for k in keys if k is not None],
                    values=[self.visit(v, d) for v in values],
                )
            case ast.Starred():
                raise self.fail(node, "'*' unpacking is not available")
            case ast.ListComp() | ast.SetComp() | ast.DictComp() | ast.GeneratorExp():
                raise self.fail(node, "comprehensions are not available in rule expressions")
            case ast.JoinedStr():
                raise self.fail(node, "f-strings are not available: templates use {holes}")
            case ast.Lambda():
                raise self.fail(node, "lambda is not available")
            case ast.NamedExpr():
                raise self.fail(node, "assignment (:=) is not available")
            case _:
                raise self.fail(node, f"{type(node).__name__} is not available")

    def _name(self, node: ast.Name, name: str) -> ast.expr:
        if name.startswith(tuple(simpleeval.DISALLOW_PREFIXES)):
            raise self.fail(node, f"names starting with '_' are not available ({name})")
        if name in ("True", "False", "None"):
            return ast.Constant({"True": True, "False": False, "None": None}[name])
        if name == "event":
            return ast.Name(id="_e", ctx=ast.Load())
        if name in self.functions:
            raise self.fail(node, f"{name!r} is a function: call it as {name}(...)")
        self.names.add(name)
        return ast.Subscript(
            value=ast.Name(id="_d", ctx=ast.Load()), slice=ast.Constant(name), ctx=ast.Load()
        )

    def _check_attr_name(self, node: ast.AST, attr: str) -> None:
        if attr.startswith(tuple(simpleeval.DISALLOW_PREFIXES)):
            raise self.fail(node, f"attributes starting with '_' are not available (.{attr})")
        if attr in simpleeval.DISALLOW_METHODS:
            raise self.fail(node, f"'.{attr}' is not available")

    def _check_literal_args(self, name: str, node: ast.Call) -> None:
        """A library function may check its literal arguments when the rule loads
        (``check_literal_args = {index: check}``; a check raises ValueError): a regular
        expression that cannot compile is refused then, with its column."""
        checks = getattr(self.functions[name], "check_literal_args", None)
        if not checks:
            return
        for index, check in checks.items():
            arg = node.args[index] if index < len(node.args) else None
            if isinstance(arg, ast.Constant):
                try:
                    check(arg.value)
                except ValueError as err:
                    raise self.fail(arg, f"{name}(): {err}") from None

    def _call(self, node: ast.Call, depth: int) -> ast.expr:
        args = [self.visit(a, depth) for a in node.args]
        keywords = []
        for kw in node.keywords:
            if kw.arg is None:
                raise self.fail(node, "'**' unpacking is not available")
            keywords.append(ast.keyword(arg=kw.arg, value=self.visit(kw.value, depth)))
        match node.func:
            case ast.Name(id=name):
                if name not in self.functions:
                    raise self.fail(
                        node, f"unknown function {name!r}{_suggest(name, self.functions)}"
                    )
                self.used_functions.add(name)
                self._check_literal_args(name, node)
                func: ast.expr = ast.Name(id=f"_fn_{name}", ctx=ast.Load())
            case ast.Attribute(value=value, attr=attr):
                self._check_attr_name(node, attr)
                func = _call("_method", self.visit(value, depth), ast.Constant(attr))
            case _:
                raise self.fail(node, "only named functions and methods can be called")
        return ast.Call(func=func, args=args, keywords=keywords)


@dataclass(slots=True)
class _Parts:
    """What compiling a parameter structure collects as it goes: the data names
    it reads, the library functions it calls, and its holes as written."""

    names: set[str]
    used: set[str]
    holes: list[str]


def _on_line(tree: ast.expr, line: int) -> ast.expr:
    """Place a hole's rewritten code on ``line`` of the compiled lambda.

    Only tracebacks read this (:func:`_failing_hole`); the code runs the same.
    """
    for node in ast.walk(tree):
        if "lineno" in node._attributes:
            node.lineno = node.end_lineno = line  # type: ignore[attr-defined]
            node.col_offset = node.end_col_offset = 0  # type: ignore[attr-defined]
    return tree


def syntax_error(reason: str, source: str, column: int | None) -> ExpressionSyntaxError:
    """``reason (column N) in 'source'``, one line for logs; the error's ``caret`` shows
    the source with a caret under the column for a terminal."""
    if column is None:
        return ExpressionSyntaxError(f"{reason} in {source!r}")
    return ExpressionSyntaxError(f"{reason} (column {column}) in {source!r}", source=source,
                                 column=column)


def _call(helper: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Name(id=helper, ctx=ast.Load()), args=list(args), keywords=[])


def _suggest(name: str, known: Mapping[str, Any]) -> str:
    close = did_you_mean(name, known)
    return f" (did you mean {close!r}?)" if close else ""


# ---------------------------------------------------------------------------
# Public API


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """A validated expression, ready to evaluate against an event's data."""

    source: str
    names: frozenset[str]
    _fn: Callable[[Mapping[str, Any], Any], Any] = field(repr=False, compare=False)

    def evaluate(self, data: Mapping[str, Any], event: Any = None) -> Any:
        """Evaluate against ``data`` (the fields as names) and ``event`` (the envelope).

        Raises :class:`MissingField` when a field is absent and
        :class:`EvaluationError` for any other failure; never anything else.
        """
        try:  # _run inlined: this is the hottest call in routing
            return self._fn(data, event)
        except EvaluationError:
            raise
        except Exception as err:
            return _run_failed(err, self.source)


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A string with ``{expression}`` holes, compiled."""

    source: str
    names: frozenset[str]
    _fn: Callable[[Mapping[str, Any], Any], Any] | None = field(repr=False, compare=False)
    #: The rendered value when there are no holes (text with ``{{`` unescaped, or a structure).
    value: Any = None
    #: Each hole as written (``{total / count}``), in the order compiled: hole ``n``
    #: is line ``n + 1`` of the compiled code (see :func:`_failing_hole`).
    holes: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def constant(self) -> bool:
        """True when the template has no holes (it renders to its own text)."""
        return self._fn is None

    def render(self, data: Mapping[str, Any], event: Any = None) -> Any:
        """Render against an event; raises like :meth:`CompiledExpression.evaluate`,
        with the failing hole (or, failing that, the template) in the message."""
        if self._fn is None:
            return self.value
        try:
            return self._fn(data, event)
        except Exception as err:
            self._failed(err)

    def _failed(self, err: Exception) -> NoReturn:
        where = _failing_hole(err.__traceback__, self.holes) or _clip(self.source)
        failure = err if isinstance(err, EvaluationError) else _evaluation_error(err, where)
        message = str(failure)
        if repr(where) not in message:
            message = f"{message} in {where!r}"
        raise type(failure)(message) from None


def _run_failed(err: Exception, source: str) -> NoReturn:
    """Turn any failure of compiled user code into the one error type callers handle."""
    raise _evaluation_error(err, source) from None


def _evaluation_error(err: Exception, source: str) -> EvaluationError:
    if isinstance(err, KeyError):
        return MissingField(f"no field or key {err.args[0]!r}")
    if isinstance(err, RecursionError | MemoryError):
        return EvaluationError(f"{type(err).__name__} in {source!r}")
    return EvaluationError(f"{type(err).__name__}: {err}")


#: The file name of compiled rule code, as its frames show it in a traceback.
_CODE_NAME = "<rule expression>"


def _failing_hole(tb: TracebackType | None, holes: tuple[str, ...]) -> str | None:
    """The hole whose code was running when a render failed, from the traceback.

    The compiled lambda's frame says which line it was on, and hole ``n`` was
    compiled as line ``n + 1``; line 1 is the glue around the holes.
    """
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _CODE_NAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None or not 2 <= line <= len(holes) + 1:
        return None
    return holes[line - 2]


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_NOT_CONSTANT: Any = object()


def _describe(raw: Any) -> str:
    """A stable text form of a parameter structure (for messages and reload diffs)."""
    return raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True, default=str)


class ExpressionCompiler:
    """Compiles expressions and templates against one function library.

    ``functions`` is the library of callable names (built-ins plus what
    plugins register); changing it means building a new compiler, which the
    rule loader does on every reload.
    """

    def __init__(self, functions: Mapping[str, Callable[..., Any]]) -> None:
        for name, func in functions.items():
            if func in simpleeval.DISALLOW_FUNCTIONS:
                raise ValueError(f"function {name!r} is forbidden in the sandbox")
            if not name.isidentifier() or name.startswith("_"):
                raise ValueError(f"function name {name!r} must be an identifier without '_'")
        self.functions = dict(functions)

    def expression(self, source: str) -> CompiledExpression:
        """Validate and compile one expression; raises :class:`ExpressionSyntaxError`."""
        tree, rewriter = self._rewrite(source)
        fn = self._lambda(tree, rewriter.used_functions)
        return CompiledExpression(source, frozenset(rewriter.names), fn)

    def template(self, source: str) -> CompiledTemplate:
        """Validate and compile a template string; raises :class:`ExpressionSyntaxError`."""
        return self.structure(source)

    def structure(self, raw: Any) -> CompiledTemplate:
        """Compile a parameter structure: dicts and lists whose strings are templates.

        The whole structure becomes one compiled function (no per-field
        dispatch at run time); a structure without holes is kept as its value.
        """
        names: set[str] = set()
        used: set[str] = set()
        holes: list[str] = []
        body, constant = self._build(raw, _Parts(names, used, holes), 0)
        if constant is not _NOT_CONSTANT:
            return CompiledTemplate(_describe(raw), frozenset(), None, constant)
        return CompiledTemplate(
            _describe(raw), frozenset(names), self._lambda(body, used), holes=tuple(holes)
        )

    def _build(self, value: Any, parts: _Parts, depth: int) -> tuple[ast.expr, Any]:
        """The expression building ``value``, and its value when it has no holes."""
        if depth > MAX_NESTING:
            raise ExpressionSyntaxError(f"parameters nested deeper than {MAX_NESTING} levels")
        if isinstance(value, str):
            return self._template_body(value, parts)
        if isinstance(value, dict):
            keys: list[ast.expr | None] = []
            values: list[ast.expr] = []
            constant: dict[Any, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str | int | float | bool) and key is not None:
                    raise ExpressionSyntaxError(f"unsupported key {key!r}")
                built, const = self._build(item, parts, depth + 1)
                keys.append(ast.Constant(key))
                values.append(built)
                constant[key] = const
            holes = any(c is _NOT_CONSTANT for c in constant.values())
            return ast.Dict(keys=keys, values=values), _NOT_CONSTANT if holes else constant
        if isinstance(value, list):
            built_items = [self._build(item, parts, depth + 1) for item in value]
            consts = [c for _, c in built_items]
            node = ast.List(elts=[b for b, _ in built_items], ctx=ast.Load())
            return node, _NOT_CONSTANT if any(c is _NOT_CONSTANT for c in consts) else consts
        if value is None or isinstance(value, bool | int | float):
            return ast.Constant(value), value
        raise ExpressionSyntaxError(f"unsupported parameter value of type {type(value).__name__}")

    def _template_body(self, source: str, found: _Parts) -> tuple[ast.expr, Any]:
        if len(source) > MAX_TEMPLATE_LENGTH:
            raise ExpressionSyntaxError(
                f"template is {len(source)} characters long; the limit is {MAX_TEMPLATE_LENGTH}"
            )
        parts = split_template(source)
        if sum(isinstance(p, _Hole) for p in parts) > MAX_TEMPLATE_HOLES:
            raise ExpressionSyntaxError(f"template has more than {MAX_TEMPLATE_HOLES} holes")
        if all(isinstance(p, str) for p in parts):
            text = "".join(p for p in parts if isinstance(p, str))
            return ast.Constant(text), text
        pieces: list[ast.expr] = []
        for part in parts:
            if isinstance(part, str):
                pieces.append(ast.Constant(part))
                continue
            tree, rewriter = self._rewrite(part.text)
            found.names |= rewriter.names
            found.used |= rewriter.used_functions
            found.holes.append("{" + part.text + "}")
            pieces.append(_on_line(tree, len(found.holes) + 1))
        if len(pieces) == 1:  # exactly one hole: keep the value's type
            return pieces[0], _NOT_CONSTANT
        values: list[ast.expr] = [
            p
            if isinstance(p, ast.Constant)
            else ast.FormattedValue(value=ast.copy_location(_call("_text", p), p), conversion=-1)
            for p in pieces
        ]
        return ast.JoinedStr(values=values), _NOT_CONSTANT

    def _rewrite(self, source: str) -> tuple[ast.expr, _Rewriter]:
        if not isinstance(source, str):
            raise ExpressionSyntaxError(f"an expression must be text, not {type(source).__name__}")
        text = source.strip()
        if not text:
            raise ExpressionSyntaxError("empty expression")
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise ExpressionSyntaxError(
                f"expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_LENGTH}"
            )
        try:
            parsed = ast.parse(text, mode="eval")
        except SyntaxError as err:
            # offset 0: the text ended where more was expected; point past its end
            raise syntax_error(err.msg, text, err.offset or len(text) + 1) from None
        except (RecursionError, MemoryError, ValueError) as err:
            raise ExpressionSyntaxError(f"cannot parse {text[:60]!r}...: {err}") from None
        rewriter = _Rewriter(text, self.functions)
        return rewriter.visit(parsed.body), rewriter

    def _lambda(
        self, body: ast.expr, used_functions: set[str]
    ) -> Callable[[Mapping[str, Any], Any], Any]:
        args = ast.arguments(
            posonlyargs=[],
            args=[ast.arg("_d"), ast.arg("_e")],
            kwonlyargs=[],
            kw_defaults=[],
            defaults=[],
        )
        tree = ast.fix_missing_locations(ast.Expression(ast.Lambda(args=args, body=body)))
        namespace: dict[str, Any] = {"__builtins__": {}}
        namespace.update(_RUNTIME)
        namespace.update({f"_fn_{n}": self.functions[n] for n in used_functions})
        code = compile(tree, "<rule expression>", "eval")
        fn: Callable[[Mapping[str, Any], Any], Any] = eval(code, namespace)  # noqa: S307
        return fn


@dataclass(frozen=True, slots=True)
class _Hole:
    text: str


def split_template(source: str) -> list[str | _Hole]:
    """Split ``"a {x} b {{c}}"`` into literal text and holes.

    A hole ends at the ``}`` that balances its ``{``, skipping brackets and
    braces inside string literals, so ``{ {'a': 1}['a'] }`` is one hole.
    """
    parts: list[str | _Hole] = []
    text: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "{" and source.startswith("{{", i):
            text.append("{")
            i += 2
        elif ch == "}" and source.startswith("}}", i):
            text.append("}")
            i += 2
        elif ch == "}":
            raise ExpressionSyntaxError(f"unmatched '}}' at column {i + 1} in {source!r}")
        elif ch == "{":
            end = _hole_end(source, i)
            if text:
                parts.append("".join(text))
                text = []
            parts.append(_Hole(source[i + 1 : end]))
            i = end + 1
        else:
            text.append(ch)
            i += 1
    if text:
        parts.append("".join(text))
    return parts


def _hole_end(source: str, start: int) -> int:
    depth, i, quote = 0, start, ""
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
            if depth == 0:
                if ch != "}":
                    break
                if not source[start + 1 : i].strip():
                    raise ExpressionSyntaxError(
                        f"empty hole {{}} at column {start + 1} in {source!r}"
                    )
                return i
        i += 1
    raise ExpressionSyntaxError(f"unclosed '{{' at column {start + 1} in {source!r}")
