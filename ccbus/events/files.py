"""Reading events from files: JSON Lines (one event per line) or one JSON document.

Used by the ``replay`` source, ``ccbus replay``, ``ccbus try`` and the demo.
A line that is not valid JSON, or not an event, is reported with file and
line and skipped; the rest of the file still counts.  Documents are decoded
by :func:`~ccbus.events.jsondecode.decode_json`, so one nested deeper than
the decoder goes is such a line too, never a ``RecursionError``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ccbus.events.envelope import Event
from ccbus.events.jsondecode import decode_json

__all__ = ["BadLine", "read_events"]


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that could not become an event."""

    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def read_events(path: Path, *, source: str) -> Iterator[Event | BadLine]:
    """Events in ``path``, in file order, with :class:`BadLine` for each broken line.

    A file whose first non-blank character is ``[`` is read as one JSON array;
    anything else as JSON Lines (blank lines and lines starting with ``#`` skipped).
    """
    with path.open(encoding="utf-8", errors="replace") as handle:
        first = handle.read(1)
        while first.isspace():
            first = handle.read(1)
        handle.seek(0)
        if first == "[":
            yield from _from_array(path, handle.read(), source)
            return
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            yield _parse(path, number, text, source)


def _parse(path: Path, number: int, text: str, source: str) -> Event | BadLine:
    try:
        doc = decode_json(text)
    except json.JSONDecodeError as err:
        return BadLine(path, number, f"invalid JSON: {err.msg} (column {err.colno})")
    except ValueError as err:  # nested too deeply, NaN, a lone surrogate
        return BadLine(path, number, f"invalid JSON: {err}")
    try:
        return Event.from_dict(doc, default_source=source)
    except ValueError as err:
        return BadLine(path, number, f"not an event: {err}")


def _from_array(path: Path, text: str, source: str) -> Iterator[Event | BadLine]:
    try:
        docs = decode_json(text)
    except json.JSONDecodeError as err:
        yield BadLine(path, err.lineno, f"invalid JSON: {err.msg} (column {err.colno})")
        return
    except ValueError as err:  # nested too deeply, NaN, a lone surrogate
        yield BadLine(path, 1, f"invalid JSON: {err}")
        return
    for index, doc in enumerate(docs):
        try:
            yield Event.from_dict(doc, default_source=source)
        except ValueError as err:
            yield BadLine(path, 0, f"item {index}: not an event: {err}")
