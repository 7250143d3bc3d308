"""systemd's notify protocol, spoken directly: no libsystemd, no extra dependency.

The protocol is one ``AF_UNIX`` datagram per message, ``KEY=value`` lines,
sent to the socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for
the abstract namespace).  systemd sets the variable for ``Type=notify``
services; anywhere else it is unset and every method here does nothing, so
``ccbus run`` behaves the same in a terminal, a container or a unit.

``$WATCHDOG_USEC`` (from ``WatchdogSec=``) asks for ``WATCHDOG=1`` at least
that often; :attr:`Notifier.watchdog_interval` is half of it, as
``sd_watchdog_enabled(3)`` advises.  When ``$WATCHDOG_PID`` names another
process, the watchdog is not ours.

Both variables are removed from the environment once read, as
``sd_notify(unset_environment=1)`` does, so a child process (a JVM a plugin
starts, say) cannot speak for ccbus by mistake.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

__all__ = ["Notifier"]

log = logging.getLogger("ccbus.runtime.systemd")

#: systemd truncates longer STATUS= texts; keep ours one short line.
MAX_STATUS = 200


class Notifier:
    """Sends notify messages to systemd (or nowhere, when not under systemd)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.failures = 0
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for (read once, then removed from ``environ``)."""
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None)
        usec_text = env.pop("WATCHDOG_USEC", None)
        pid_text = env.pop("WATCHDOG_PID", None)
        usec: int | None = None
        if usec_text and usec_text.isdigit() and int(usec_text) > 0:
            if not pid_text or pid_text == str(os.getpid()):
                usec = int(usec_text)
        if address and not (address.startswith("/") or address.startswith("@")):
            log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract: not notifying", address)
            address = None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two ``WATCHDOG=1``: half the watchdog timeout, or None."""
        if self._sock is None or not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2_000_000

    def send(self, **fields: str | int) -> bool:
        """Send one message of ``KEY=value`` lines; False (and counted) if it could not go."""
        if self._sock is None or self.address is None:
            return False
        text = "\n".join(f"{key}={value}" for key, value in fields.items())
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._sock.sendto(text.encode(), target)
        except OSError as err:  # systemd gone or socket full: never fatal
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning(
                    "cannot notify systemd at %s: %s (%d failure(s))",
                    self.address,
                    err.strerror or err,
                    self.failures,
                )
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Start-up (or a reload) is complete."""
        if status:
            return self.send(READY=1, STATUS=_one_line(status))
        return self.send(READY=1)

    def reloading(self) -> bool:
        """A reload begins; ``MONOTONIC_USEC`` lets systemd match it to our ``READY=1``."""
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                         // 1000)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def status(self, text: str) -> bool:
        return self.send(STATUS=_one_line(text))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_STATUS else line[: MAX_STATUS - 1] + "…"
