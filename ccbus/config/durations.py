"""Durations as admins write them in YAML: ``30s``, ``15m``, ``1h30m``, ``2d``, or seconds."""

from __future__ import annotations

import re
from typing import Any

from ccbus.errors import EvaluationError

__all__ = ["DURATION_PATTERN", "click_duration", "format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
#: What :func:`parse_duration` accepts as text, as one pattern (for JSON Schema).
DURATION_PATTERN = (
    r"^\s*(\d+(\.\d+)?|(\d+(\.\d+)?\s*([mM][sS]|[smhdwSMHDW])\s*)+)\s*$"
)


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number (seconds) or text like ``"1h30m"`` or ``"250ms"``.

    Raises :class:`EvaluationError` (a ``ValueError`` for config validation
    too) with the accepted forms spelled out, because this is typed by hand.
    """
    if isinstance(value, bool):
        raise DurationError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise DurationError(f"a duration cannot be negative: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise DurationError(f"not a duration: {value!r}")
    text = value.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise DurationError(
            f"not a duration: {value!r} (write e.g. 30s, 15m, 1h30m, 2d or a number of seconds)"
        )
    return total


def format_duration(seconds: float) -> str:
    """``5400`` -> ``"1h30m"``: the inverse of :func:`parse_duration` for messages."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out, rest = [], int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out) or "0s"


class DurationError(EvaluationError, ValueError):
    """A duration could not be parsed (a ValueError, so pydantic reports it by key)."""


def click_duration(ctx: Any, param: Any, value: Any) -> float | None:
    """A click ``callback=`` for an option that takes a duration (``--every 30s``).

    One for every command a plugin adds, so ``--ping 5x`` is refused with the
    same message everywhere; ``None`` (an option not given) passes through.
    """
    import click

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
