"""The one reconnect policy: jittered exponential backoff with a cap, reset after stability.

Every source is restarted through this (see :class:`ccbus.bus.Bus`), so all
of them behave alike when a broker goes away: the first retry is quick,
later ones spread out to ``cap``, and "full jitter" keeps a fleet of ccbus
instances from reconnecting in lockstep.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    initial: float = 0.5
    cap: float = 60.0
    factor: float = 2.0
    #: A run that lasted at least this long counts as stable: the next delay starts over.
    stable_after: float = 60.0
    attempt: int = 0
    _started: float = field(default=0.0, repr=False)

    def started(self) -> None:
        """Call when a connection (or run) begins."""
        self._started = time.monotonic()

    def next_delay(self) -> float:
        """The delay before the next attempt, after a failure."""
        if self._started and time.monotonic() - self._started >= self.stable_after:
            self.attempt = 0
        ceiling = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto
