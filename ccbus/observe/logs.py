"""Logging set-up: one line per record on stderr, journald-friendly, secrets redacted.

Under systemd (``$JOURNAL_STREAM`` set) each line starts with a ``<N>``
syslog priority prefix that journald turns into the entry's priority, and
no timestamp (journald adds its own).  Elsewhere lines carry a timestamp.
A record is always one line: in text mode the newlines of a multi-line
message or a traceback are written as the two characters ``\\n`` (``\\r``
likewise), so journald keeps the record as one entry (not one per line),
and a newline in data quoted by a message cannot start a forged record.
``log_format: json`` writes one JSON object per line instead (``time``,
``level``, ``logger``, ``message``, ``exception``), still behind the
``<N>`` prefix under journald, for log shippers that parse JSON.

Any value that came from a credential, a ``secrets:`` entry or a long
environment variable is replaced by ``***`` in the *finished* line, in
whichever encoding it shows there (raw, percent-encoded, JSON-escaped,
base64, base64 of ``user:password``): message,
arguments and traceback alike, so an exception that quotes a URL with a
token in it cannot leak it.  :class:`Redactor` is the one redaction used
everywhere ccbus shows data (logs, traces, the live view).  A config reload
that brings new secrets adds them with :meth:`Redactor.add` and
:func:`redact_in_logs`; secrets are never dropped, so a value a previous
config used stays hidden.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from ccbus.config.secrets import SecretBook

__all__ = ["LogEvery", "Redactor", "redact_in_logs", "setup_logging"]

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
#: Text mode writes these characters escaped, so a record stays one line.
_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r"})


class LogEvery:
    """At most one log line per key per ``interval`` seconds, and how many were held back.

    What repeats under a fault (a dead webhook target retried for hours, a
    client sending garbage) is counted in ``/metrics`` on every occurrence
    but logged once a minute, so a long outage cannot flood the journal::

        throttle = LogEvery(60.0)
        held_back = throttle.due(("retry", rule, action))
        if held_back is not None:
            log.warning("... (%d more like it in the last minute)", held_back)
    """

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: dict[Any, float] = {}
        self._held: dict[Any, int] = {}

    def due(self, key: Any) -> int | None:
        """None when this occurrence is not to be logged; else how many were skipped since."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


class Redactor:
    """Masks known secret values in text, and in every string of a JSON-like value.

    A thin face on a :class:`~ccbus.config.secrets.SecretBook`: a value is
    masked in each encoding it takes on the way out (raw, JSON-escaped,
    percent-encoded, base64, and base64 of ``user:password``), not only as
    it was configured.  The bus hands its own book in, so what it seals in
    the outbox and what it masks in output are one list.
    """

    def __init__(self, secrets: Iterable[str] = (), *, book: SecretBook | None = None) -> None:
        self.book = book if book is not None else SecretBook()
        self.add(secrets)

    @property
    def secrets(self) -> list[str]:
        """The values masked, longest first."""
        return self.book.values

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values too (never forgotten, so a previous config's values stay hidden)."""
        fresh = [s for s in secrets if s and s not in self.book.values]
        if fresh:
            self.book.add({}, fresh)

    def text(self, text: str) -> str:
        return self.book.redact(text)

    def value(self, value: Any) -> Any:
        if not self.book:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


class _Formatter(logging.Formatter):
    """Text or JSON lines, redacted, with journald's ``<N>`` prefix when asked."""

    def __init__(self, redactor: Redactor, *, json_lines: bool, journald: bool) -> None:
        if journald:
            super().__init__("%(name)s: %(message)s")
        else:
            super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        self.redactor = redactor
        self.json_lines = json_lines
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>" if self.journald else ""
        if not self.json_lines:
            return prefix + self.redactor.text(super().format(record)).translate(_LINE_BREAKS)
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redactor.text(record.getMessage()),
        }
        if record.exc_info:
            doc["exception"] = self.redactor.text(self.formatException(record.exc_info))
        return prefix + json.dumps(doc, ensure_ascii=False, default=str)


def redact_in_logs(secrets: Iterable[str]) -> None:
    """Add ``secrets`` to the redactor of the handler :func:`setup_logging` installed."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, _Formatter):
            handler.formatter.redactor.add(secrets)


def setup_logging(
    level: str = "info",
    secrets: Iterable[str] = (),
    log_format: Literal["text", "json"] = "text",
    *,
    book: SecretBook | None = None,
) -> Redactor:
    """Send every record to stderr through one redacting formatter; returns the redactor.

    ``book``: mask what it knows, now and as it learns more (a reload adds to it)."""
    redactor = Redactor(secrets, book=book)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _Formatter(
            redactor,
            json_lines=log_format == "json",
            journald=bool(os.environ.get("JOURNAL_STREAM")),
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("hypercorn.access", "watchfiles", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return redactor
