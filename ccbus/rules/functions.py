"""The function library rule expressions and templates can call.

Every function here is documented by its docstring; ``docs/rules.md`` lists
them and ``ccbus plugins`` shows the ones plugins add.  They are written for
untrusted input: bounded sizes, no I/O, no access to anything but their
arguments, and ``None`` rather than an exception where "not there" is a
normal answer.

Time functions read the bus's :class:`Clock`, so ``ccbus test`` can run a
rule through fifteen minutes in a millisecond.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import regex

from ccbus.config.durations import parse_duration
from ccbus.errors import EvaluationError
from ccbus.events.envelope import parse_timestamp
from ccbus.rules.budget import budget, remaining
from ccbus.rules.expressions import (
    MAX_ITEMS,
    EnvelopeView,
    bounded_text,
    check_size,
    checked_text,
)

__all__ = ["Clock", "SystemClock", "build_library"]

MAX_PATTERN_LENGTH = 500
MAX_REGEX_INPUT = 100_000
MAX_STRING_LENGTH = 100_000
#: Longest one regular-expression call may run, in seconds (never past the event's budget).
REGEX_TIMEOUT = 0.1


class Clock:
    """Where "now" comes from. The bus uses wall time; tests move it by hand."""

    def now(self) -> float:
        """Seconds since the epoch."""
        raise NotImplementedError


class SystemClock(Clock):
    def now(self) -> float:
        return time.time()


#: Most units a pattern may compile to: each literal, class or group is one unit, and
#: a counted repeat ``{m,n}`` multiplies what it repeats (through nesting) by its
#: larger count.  ``regex`` unrolls counted repeats when it compiles, so this bounds
#: the time and memory of compiling; ``(?:x{65535}){65535}`` is refused, ``\d{4}`` is 4.
MAX_PATTERN_COST = 10_000
#: Compiled patterns kept, and the units (see above) they may hold in all: rules reuse
#: a few patterns, and a pattern taken from event data must not pin memory.
CACHE_PATTERNS = 256
CACHE_COST = 50_000

_QUANTIFIER = regex.compile(r"\{\s*(\d*)\s*(?:(,)\s*(\d*)\s*)?\}")


def pattern_cost(pattern: str) -> int:
    """How many units ``pattern`` compiles to, at most (see :data:`MAX_PATTERN_COST`).

    A scan of the pattern's text, linear and itself bounded by
    :data:`MAX_PATTERN_LENGTH`: groups nest, a counted repeat multiplies the
    atom before it, alternatives add up.  It never counts less than the
    ``regex`` module builds; it may count more (an escape like ``\\x{41}`` reads
    as a repeat of 41), which only makes it refuse sooner.
    """
    stack: list[int] = [0]  # the weight of each open group so far
    last = 0  # the weight of the atom a quantifier would apply to
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            stack[-1] += 1
            last = 1
            continue
        if ch == "[":
            end = i + 1
            if end < n and pattern[end] == "^":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1
            while end < n and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            i = end + 1
            stack[-1] += 1
            last = 1
            continue
        if ch == "(":
            stack.append(0)
            last = 0
        elif ch == ")":
            inner = stack.pop() if len(stack) > 1 else stack[0]
            last = inner + 1
            stack[-1] += last
        elif ch == "{":
            found = _QUANTIFIER.match(pattern, i)
            if found is not None and (found.group(1) or found.group(3)):
                low, comma, high = found.groups()
                count = max(int(low or 0), int(high or 0) if comma else int(low or 0), 1)
                stack[-1] += last * (count - 1)
                last *= count
                i = found.end()
                continue
            stack[-1] += 1
            last = 1
        elif ch in "*+?|":
            pass  # not unrolled: an alternative adds its atoms as they come
        else:
            stack[-1] += 1
            last = 1
        i += 1
    return sum(stack)


class _PatternCache:
    """The last patterns compiled, and the reasons of the last refused.

    Bounded by count and by cost (:data:`CACHE_COST`), least recently used out
    first; a refusal is kept too, so the same attack on every event is
    answered from here.
    """

    def __init__(self, size: int = CACHE_PATTERNS, cost: int = CACHE_COST) -> None:
        self.size = size
        self.cost = cost
        self.held = 0
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()

    def get(self, pattern: str) -> Any:
        entry = self._entries.get(pattern)
        if entry is not None:
            self._entries.move_to_end(pattern)
            compiled = entry[0]
        else:
            compiled, units = _compile(pattern)
            self._entries[pattern] = (compiled, units)
            self.held += units
            while len(self._entries) > self.size or self.held > self.cost:
                _, (_, gone) = self._entries.popitem(last=False)
                self.held -= gone
        if isinstance(compiled, str):
            raise EvaluationError(compiled)
        return compiled

    def clear(self) -> None:
        self._entries.clear()
        self.held = 0


def _compile(pattern: str) -> tuple[Any, int]:
    """``(compiled pattern or the reason it is refused, units held)``."""
    shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"regular expression longer than {MAX_PATTERN_LENGTH} characters", 1
    cost = pattern_cost(pattern)
    if cost > MAX_PATTERN_COST:
        return (
            f"regular expression {shown!r} is too large: its repeats expand to {cost:,} "
            f"units, the limit is {MAX_PATTERN_COST:,}"
        ), 1
    try:
        return regex.compile(pattern), max(cost, 1)
    except (regex.error, OverflowError, MemoryError, RecursionError) as err:
        return f"bad regular expression {shown!r}: {err}", 1


_patterns = _PatternCache()


def _regex(pattern: str) -> Any:
    """A compiled pattern of the ``regex`` module (re-compatible syntax).

    ``regex`` rather than ``re`` because its matching takes a timeout: a
    pattern like ``(a|aa)+$`` backtracks exponentially, and ``re`` would hold
    the GIL (and the whole bus) until it finished, if ever.  Compiling cannot
    be interrupted, so a pattern's size is bounded before it is compiled
    (:func:`pattern_cost`): patterns may come from event data.
    """
    if not isinstance(pattern, str):
        raise EvaluationError("a regular expression must be text")
    return _patterns.get(pattern)


def _timed(call: Callable[..., Any], pattern: str, *args: Any) -> Any:
    """Run a match with the smaller of :data:`REGEX_TIMEOUT` and the event's budget left."""
    left = remaining()
    if left <= 0:
        raise budget.exceeded(f"regular expression {pattern[:60]!r} not run")
    try:
        return call(*args, timeout=min(REGEX_TIMEOUT, left))
    except TimeoutError:
        if left < REGEX_TIMEOUT:
            raise budget.exceeded(f"regular expression {pattern[:60]!r} stopped") from None
        raise EvaluationError(
            f"regular expression {pattern!r} took longer than {REGEX_TIMEOUT * 1000:.0f} ms "
            "(catastrophic backtracking?)"
        ) from None


def _text_arg(value: Any) -> str:
    text = value if isinstance(value, str) else bounded_text(value)
    if len(text) > MAX_REGEX_INPUT:
        raise EvaluationError("text too long for a regular expression")
    return text


def _moment(value: Any, clock: Clock) -> datetime:
    if value is None:
        return datetime.fromtimestamp(clock.now(), UTC)
    parsed = parse_timestamp(value)
    if parsed is None:
        raise EvaluationError(f"not a timestamp: {value!r}")
    return parsed


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise EvaluationError(f"unknown time zone {tz!r}") from None


def build_library(
    clock: Clock, secrets: Mapping[str, str] | None = None
) -> dict[str, Callable[..., Any]]:
    """The built-in functions, bound to ``clock`` and the config's ``secrets:``.

    Plugins add theirs by hook.
    """
    named_secrets = dict(secrets or {})

    # -- secrets ------------------------------------------------------------------
    def secret(name: str) -> str:
        """A value from the config's ``secrets:`` (kept out of rule files and logs)."""
        try:
            return named_secrets[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(named_secrets)) or "none configured"
            raise EvaluationError(f"no secret named {name!r} (known: {known})") from None

    # -- time and durations -------------------------------------------------
    def now() -> datetime:
        """The current time (UTC), as the bus's clock sees it."""
        return datetime.fromtimestamp(clock.now(), UTC)

    def timestamp(value: Any) -> datetime | None:
        """Parse a vendor timestamp (ISO 8601, epoch s/ms); None when unknown."""
        return parse_timestamp(value)

    def age(value: Any) -> float | None:
        """Seconds from a timestamp until now; None when the timestamp is unknown."""
        moment = parse_timestamp(value)
        if moment is None:
            return None
        return clock.now() - moment.timestamp()

    def seconds(text: Any) -> float:
        """A duration like ``"90s"``, ``"15m"``, ``"1h30m"`` or a number, in seconds."""
        return parse_duration(text)

    def local_time(value: Any = None, tz: str = "UTC") -> datetime:
        """A timestamp (default: now) in time zone ``tz``, e.g. ``"Europe/Amsterdam"``."""
        return _moment(value, clock).astimezone(_zone(tz))

    def hour(value: Any = None, tz: str = "UTC") -> int:
        """The hour (0-23) of a timestamp (default: now) in time zone ``tz``."""
        return local_time(value, tz).hour

    def weekday(value: Any = None, tz: str = "UTC") -> int:
        """The weekday of a timestamp (default: now): Monday is 0, Sunday 6."""
        return local_time(value, tz).weekday()

    def between(start: str, end: str, value: Any = None, tz: str = "UTC") -> bool:
        """True when the time of day is within ``"HH:MM"``..``"HH:MM"`` (may wrap midnight)."""
        moment = local_time(value, tz)
        minute = moment.hour * 60 + moment.minute
        lo, hi = _hhmm(start), _hhmm(end)
        return lo <= minute < hi if lo <= hi else (minute >= lo or minute < hi)

    # -- regular expressions ------------------------------------------------
    def matches(pattern: str, text: Any) -> bool:
        """True when ``pattern`` (a Python regex) is found anywhere in ``text``."""
        return _timed(_regex(pattern).search, pattern, _text_arg(text)) is not None

    def extract(pattern: str, text: Any, group: int | str = 0) -> str | None:
        """The first match of ``pattern`` in ``text`` (or one of its groups); None if none."""
        found = _timed(_regex(pattern).search, pattern, _text_arg(text))
        if found is None:
            return None
        try:
            value: str | None = found.group(group)
        except IndexError:
            raise EvaluationError(f"pattern {pattern!r} has no group {group!r}") from None
        return value

    def sub(pattern: str, replacement: str, text: Any) -> str:
        """``text`` with every match of ``pattern`` replaced (``\\1`` refers to groups).

        The result is bounded by the string limit as it is built: a replacement
        that repeats a group (``sub('(?=(.*))', '\\1', text)``) can grow with the
        square of the text, so counting the pieces is the only honest bound.
        """
        subject = _text_arg(text)
        if not isinstance(replacement, str):
            raise EvaluationError("sub() replacement must be text")
        built = len(subject)
        literal = "\\" not in replacement

        def piece(found: Any) -> str:
            nonlocal built
            out: str = replacement if literal else found.expand(replacement)
            built += len(out) - (found.end() - found.start())
            if built > MAX_STRING_LENGTH:
                raise EvaluationError(
                    f"sub() would build a string over the limit of {MAX_STRING_LENGTH:,} characters"
                )
            return out

        try:
            result: str = _timed(_regex(pattern).sub, pattern, piece, subject)
        except (regex.error, IndexError) as err:
            raise EvaluationError(f"bad replacement {replacement!r}: {err}") from None
        return result

    # -- lookups ------------------------------------------------------------
    def get(obj: Any, path: Any, default: Any = None) -> Any:
        """Safe nested lookup: ``get(event.data, "caller.number", "unknown")``.

        ``path`` is dot-separated (list indexes are numbers) or a list of keys;
        any missing step gives ``default`` instead of failing the rule.
        """
        current = obj.get("data") if type(obj) is EnvelopeView else obj
        steps = path.split(".") if isinstance(path, str) else list(path)
        for step in steps:
            if type(current) is dict or isinstance(current, Mapping):
                if step not in current:
                    return default
                current = current[step]
            elif isinstance(current, list | tuple):
                try:
                    current = current[int(step)]
                except (ValueError, IndexError, TypeError):
                    return default
            else:
                return default
        return current

    def has(obj: Any, path: Any) -> bool:
        """True when ``get(obj, path)`` would find something (even None)."""
        marker = object()
        return get(obj, path, marker) is not marker

    def coalesce(*values: Any) -> Any:
        """The first value that is neither None nor the empty string."""
        for value in values:
            if value is not None and value != "":
                return value
        return None

    def one_of(value: Any, *choices: Any) -> bool:
        """True when ``value`` equals any of ``choices``."""
        return value in choices

    # -- text -------------------------------------------------------------
    def lower(text: Any) -> str:
        """Lower-case text (None becomes "")."""
        return checked_text(bounded_text(text).lower())

    def upper(text: Any) -> str:
        """Upper-case text (None becomes ""); ``"ß"`` becomes ``"SS"``, so it is size-checked."""
        return checked_text(bounded_text(text).upper())

    def strip(text: Any) -> str:
        """Text without leading and trailing white space."""
        return bounded_text(text).strip()

    def contains(haystack: Any, needle: Any) -> bool:
        """True when ``needle`` is in ``haystack`` (text, list or dict keys); False on None."""
        if haystack is None:
            return False
        try:
            return needle in haystack
        except TypeError:
            return False

    def startswith(text: Any, prefix: str) -> bool:
        """True when text starts with ``prefix``."""
        return bounded_text(text).startswith(prefix)

    def endswith(text: Any, suffix: str) -> bool:
        """True when text ends with ``suffix``."""
        return bounded_text(text).endswith(suffix)

    def truncate(text: Any, length: int, ellipsis: str = "…") -> str:
        """Text cut to at most ``length`` characters, marking the cut."""
        value = bounded_text(text)
        return value if len(value) <= length else value[: max(0, length - len(ellipsis))] + ellipsis

    def text(value: Any) -> str:
        """Any value as text: None is "", lists and dicts are JSON."""
        return bounded_text(value)

    def join(items: Iterable[Any], separator: str = ", ") -> str:
        """Items as text joined by ``separator``."""
        parts = [bounded_text(p) for p in _items(items)]
        if sum(map(len, parts)) + len(separator) * len(parts) > MAX_STRING_LENGTH:
            raise EvaluationError("join() would build a string over the size limit")
        return separator.join(parts)

    def split(text: Any, separator: str | None = None) -> list[str]:
        """Text split on ``separator`` (white space by default)."""
        return _items(bounded_text(text).split(separator, MAX_ITEMS))

    # -- numbers and collections -----------------------------------------------
    def number(value: Any, default: Any = None) -> float | int | Any:
        """A number from a number or numeric text; ``default`` when it is neither."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            return default
        return int(as_float) if as_float.is_integer() and "." not in str(value) else as_float

    library: dict[str, Callable[..., Any]] = {
        "str": text,
        "int": _safe_int,
        "float": float,
        "bool": bool,
        "len": len,
        "abs": abs,
        "round": _safe_round,
        "min": min,
        "max": max,
        "sum": _safe_sum,
        "any": any,
        "all": all,
        "sorted": _safe_sorted,
        "list": _safe_list,
    }
    for func in (
        secret,
        now,
        timestamp,
        age,
        seconds,
        local_time,
        hour,
        weekday,
        between,
        matches,
        extract,
        sub,
        get,
        has,
        coalesce,
        one_of,
        lower,
        upper,
        strip,
        contains,
        startswith,
        endswith,
        truncate,
        text,
        join,
        split,
        number,
    ):
        library[func.__name__] = func
    for func in (matches, extract, sub):  # a literal pattern is compiled when the rule loads
        setattr(func, "check_literal_args", {0: _check_pattern})  # noqa: B010
    return library


def _check_pattern(pattern: object) -> None:
    """A literal pattern in a rule must compile: say so at load, not at 3 a.m."""
    if not isinstance(pattern, str):
        raise ValueError("a regular expression must be text")
    try:
        _regex(pattern)
    except EvaluationError as err:
        raise ValueError(str(err)) from None


def _hhmm(value: str) -> int:
    try:
        hours, minutes = str(value).split(":")
        return int(hours) * 60 + int(minutes)
    except ValueError:
        raise EvaluationError(f"expected a time of day like '08:30', not {value!r}") from None


def _safe_int(value: Any, base: int = 10) -> int:
    """int() that refuses huge digit strings (CPython's own limit, said plainly)."""
    if isinstance(value, str):
        if len(value) > 4300:
            raise EvaluationError("number text too long")
        return int(value, base)
    return int(value)


def _items(values: Iterable[Any]) -> list[Any]:
    """At most MAX_ITEMS items of ``values`` as a list, else an error: bounds every list built."""
    items = []
    for item in values:
        items.append(item)
        if len(items) > MAX_ITEMS:
            raise EvaluationError(f"more than {MAX_ITEMS} items")
    check_size(items)
    return items


def _safe_round(number: float, ndigits: int | None = None) -> float:
    if ndigits is not None and abs(ndigits) > 400:
        raise EvaluationError("round() to more than 400 digits")
    return round(number, ndigits)


def _safe_sum(values: Iterable[Any], start: Any = 0) -> Any:
    items = _items(values)
    if any(isinstance(v, list | tuple | str) for v in items):
        raise EvaluationError("sum() adds numbers only")
    return sum(items, start)


def _safe_sorted(values: Iterable[Any], reverse: bool = False) -> list[Any]:
    return sorted(_items(values), reverse=reverse)


def _safe_list(values: Iterable[Any] = ()) -> list[Any]:
    return _items(values)


def describe(library: Mapping[str, Callable[..., Any]]) -> dict[str, str]:
    """``{name: first docstring line}`` for a function library (``ccbus plugins --functions``)."""
    return {
        name: ((func.__doc__ or "").strip().splitlines() or [""])[0]
        for name, func in sorted(library.items())
    }
