"""One running bus per state directory.

Two ``ccbus run`` on one ``state_dir`` share its outbox, and both deliver
every call in it: an admin who starts a second instance by mistake (a
manual run beside the systemd unit, a copied unit file) doubles every
webhook and every notification.  So a running bus holds an exclusive
``flock`` on ``<state_dir>/ccbus.lock`` for its whole life, and a second one
is refused at start with a message naming the holder's pid.

``flock`` belongs to the open file, so the kernel drops it when the
process ends in any way, ``kill -9`` included: there is no stale lock to
clean up, and the file itself is left in place (removing it would let a
third process lock a new file while the second still holds the old one).
Commands that only read the state directory (``ccbus dead-letters list``,
``ccbus status``) do not take the lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ccbus.delivery.store import StateDirError

__all__ = ["LOCK_FILE", "StateDirLock", "StateDirLocked"]

LOCK_FILE = "ccbus.lock"


class StateDirLocked(StateDirError):
    """Another process runs a bus on this state directory."""


class StateDirLock:
    """The exclusive lock on a state directory, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StateDirLocked` naming who holds it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StateDirLocked(
                f"another ccbus{f' (pid {holder})' if holder else ''} is running on "
                f"state_dir {self.path.parent} (it holds {self.path}): two processes on one "
                "state directory would deliver every call twice; stop that one first, or "
                "give this one a state_dir of its own"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # who holds it, for the next one's message: nice to have, not needed
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same
        self._fd = fd

    def release(self) -> None:
        """Let go (closing the file drops the lock); the file stays."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
