"""A full state directory is an outage to ride out, not a crash.

When a write to the state directory fails because the filesystem is full
(SQLite's ``SQLITE_FULL``, ``ENOSPC``, a quota) the bus cannot record the
calls of a new event, and by the delivery promise it must not acknowledge
an event whose calls are not recorded.  So instead of raising (which used
to end ``ccbus run`` with a traceback, and a restart failed until space
returned) the bus enters a :class:`StorageOutage`:

* every ``emit`` waits until the outage ends, so a broker source does not
  acknowledge, and its broker keeps the messages; the write that failed is
  retried, so the event being recorded when the disk filled is not lost;
* the webhook source answers ``503`` with ``Retry-After`` instead of
  accepting a request it cannot record;
* ``/readyz`` answers 503 with the reason, ``ccbus status`` shows it, and the
  log says so once when it begins, once a minute while it lasts and once
  when it ends (never once per failed write);
* the bus probes the directory (a write the size of a big call) every
  :data:`PROBE_INTERVAL` seconds and resumes by itself when one succeeds
  and :data:`MIN_FREE_BYTES` are free again.

The bus also looks at the free space every :data:`PROBE_INTERVAL` seconds
(``statvfs``, a system call) and enters the outage when less than
:data:`MIN_FREE_BYTES` are left, before a write fails: SQLite reuses its
write-ahead log's space, so writes can go on for a while on a full disk and
then fail in the middle of a request, which would leave that request
waiting for the outage to end instead of being told to come back later.

Calls that fail during the outage cannot have their retry recorded: their
worker waits for the outage to end and records it then, so a dead target is
not retried in a loop meanwhile.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from ccbus.observe.logs import LogEvery

__all__ = ["MIN_FREE_BYTES", "PROBE_INTERVAL", "REMIND_INTERVAL", "StorageOutage", "free_bytes",
           "low_space", "storage_error"]

log = logging.getLogger("ccbus.delivery.outage")

#: Seconds between probes of a full state directory.
PROBE_INTERVAL = 1.0
#: Free bytes below which the state directory counts as full (as an unprivileged
#: process sees it: the blocks reserved for root do not count).
MIN_FREE_BYTES = 1024 * 1024
#: Seconds between the log lines that say the outage goes on.
REMIND_INTERVAL = 60.0

# SQLite's primary result codes that mean "the disk cannot take this write"
_SQLITE_FULL = 13
_SQLITE_IOERR = 10
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def storage_error(err: BaseException) -> str | None:
    """Why ``err`` means the state directory cannot take writes now, or None if it does not.

    Only conditions that go away by themselves count (full, over quota, an
    I/O error on write): a corrupt database or a wrong path stays an error.
    """
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR):
            return str(err)
        if "disk is full" in str(err) or "disk I/O error" in str(err):
            return str(err)
        return None
    if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
        return err.strerror or str(err)
    return None


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged process may still write under ``path`` (None: unknown)."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def low_space(path: Path) -> str | None:
    """Why ``path`` counts as full (less than :data:`MIN_FREE_BYTES` free), else None."""
    free = free_bytes(path)
    if free is None or free >= MIN_FREE_BYTES:
        return None
    return f"{free // 1024} KiB free, less than {MIN_FREE_BYTES // 1024} KiB"


class StorageOutage:
    """Whether the state directory takes writes, and a way to wait until it does again."""

    def __init__(self, where: str = "the state directory",
                 on_begin: Callable[[], None] | None = None) -> None:
        """``where`` names the directory in messages; ``on_begin()`` hears each outage begin."""
        self.where = where
        self.on_begin = on_begin
        #: Why writes fail (None: they do not).
        self.reason: str | None = None
        #: ``time.time()`` when the current outage began.
        self.since = 0.0
        #: Outages so far (``/metrics``: ``ccbus_storage_outages_total``).
        self.count = 0
        self._ended = anyio.Event()
        self._ended.set()
        self._began_log = LogEvery(REMIND_INTERVAL)
        self._logged = False
        self._last_remind = 0.0

    @property
    def active(self) -> bool:
        return self.reason is not None

    def describe(self) -> str | None:
        """One line for ``/readyz``, ``ccbus status`` and the log; None when writes work."""
        if self.reason is None:
            return None
        return (f"{self.where} is full ({self.reason}) since "
                f"{time.strftime('%H:%M:%S', time.localtime(self.since))}: not accepting "
                "input until there is space again")

    def begin(self, what: str, err: BaseException | str) -> None:
        """A write (``what``: "recording calls", ...) failed for want of space: pause input."""
        reason = err if isinstance(err, str) else (storage_error(err) or str(err))
        if self.reason is not None:
            return
        self.reason = reason
        self.since = time.time()
        self.count += 1
        if self.on_begin is not None:
            self.on_begin()
        self._ended = anyio.Event()
        self._last_remind = time.monotonic()
        held_back = self._began_log.due("began")
        self._logged = held_back is not None
        if held_back is not None:  # an outage that comes and goes: once a minute
            log.error(
                "%s is full (%s, while %s); not accepting input (sources wait, the webhook "
                "source answers 503) until there is space again; probing every %gs%s",
                self.where, reason, what, PROBE_INTERVAL,
                f" ({held_back} more outage(s) in the last minute)" if held_back else "",
            )

    def end(self) -> None:
        """A probe wrote: accept input again, and wake everything that waits."""
        if self.reason is None:
            return
        lasted = time.time() - self.since
        self.reason = None
        self._ended.set()
        if self._logged:
            log.warning("%s takes writes again after %.0fs: accepting input again",
                        self.where, lasted)

    def remind(self) -> None:
        """While the outage lasts, one log line a minute (call it as often as you like)."""
        if self.reason is None or time.monotonic() - self._last_remind < REMIND_INTERVAL:
            return
        self._last_remind = time.monotonic()
        log.error("%s is still full (%s) after %.0fs: not accepting input",
                  self.where, self.reason, time.time() - self.since)

    async def wait(self) -> None:
        """Return once writes work (at once when they do)."""
        while self.reason is not None:
            await self._ended.wait()
