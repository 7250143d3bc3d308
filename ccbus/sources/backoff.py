"""The one reconnect policy: jittered exponential backoff with a cap, reset after stability.

Every source is restarted through this (see :class:`ccbus.runtime.bus.Bus`), so all
of them behave alike when a broker goes away: the first retry is quick,
later ones spread out to ``cap``, and "full jitter" keeps a fleet of ccbus
instances from reconnecting in lockstep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
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
    #: Seconds, monotonic; replaceable so the reset can be tested without waiting a minute.
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _started: float | None = field(default=None, repr=False)

    def started(self) -> None:
        """Call when a connection (or run) begins: once it has lasted ``stable_after``,
        the next failure starts the delays over from ``initial``."""
        self._started = self.clock()

    def next_delay(self) -> float:
        """The delay before the next attempt, after a failure."""
        if self._started is not None and self.clock() - self._started >= self.stable_after:
            self.attempt = 0
        ceiling = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto
