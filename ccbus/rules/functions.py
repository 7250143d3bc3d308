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

import functools
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import regex

from ccbus.config.durations import parse_duration
from ccbus.errors import EvaluationError
from ccbus.events.envelope import parse_timestamp
from ccbus.rules.expressions import MAX_ITEMS, EnvelopeView, bounded_text, check_size

__all__ = ["Clock", "SystemClock", "build_library"]

MAX_PATTERN_LENGTH = 500
MAX_REGEX_INPUT = 100_000
MAX_STRING_LENGTH = 100_000
#: Longest a regular expression may run on one event, in seconds.
REGEX_TIMEOUT = 0.1


class Clock:
    """Where "now" comes from. The bus uses wall time; tests move it by hand."""

    def now(self) -> float:
        """Seconds since the epoch."""
        raise NotImplementedError


class SystemClock(Clock):
    def now(self) -> float:
        return time.time()


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> Any:
    """A compiled pattern of the ``regex`` module (re-compatible syntax).

    ``regex`` rather than ``re`` because its matching takes a timeout: a
    pattern like ``(a|aa)+$`` backtracks exponentially, and ``re`` would hold
    the GIL (and the whole bus) until it finished, if ever.
    """
    if not isinstance(pattern, str):
        raise EvaluationError("a regular expression must be text")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise EvaluationError(f"regular expression longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return regex.compile(pattern)
    except regex.error as err:
        raise EvaluationError(f"bad regular expression {pattern!r}: {err}") from None


def _timed(call: Callable[..., Any], pattern: str, *args: Any) -> Any:
    try:
        return call(*args, timeout=REGEX_TIMEOUT)
    except TimeoutError:
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
        """``text`` with every match of ``pattern`` replaced (``\\1`` refers to groups)."""
        subject = _text_arg(text)
        # bound the worst case before building it: every position could match
        if len(subject) + len(str(replacement)) * (len(subject) + 1) > MAX_STRING_LENGTH:
            raise EvaluationError("sub() could build a string over the size limit")
        try:
            result: str = _timed(_regex(pattern).sub, pattern, replacement, subject)
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
        return bounded_text(text).lower()

    def upper(text: Any) -> str:
        """Upper-case text (None becomes "")."""
        return bounded_text(text).upper()

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
