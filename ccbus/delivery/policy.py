"""How hard to try: attempts, age, concurrency and backoff, per action."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field, PrivateAttr

from ccbus.config.durations import format_duration
from ccbus.config.schema import Duration, Options

__all__ = ["DeliveryConfig", "DeliveryPolicy"]


class DeliveryPolicy(Options):
    """Limits for the calls of one action (or the defaults for all)."""

    attempts: int = Field(default=8, ge=1)
    max_age: Duration = 86_400.0
    concurrency: int = Field(default=4, ge=1)
    timeout: Duration = 30.0
    backoff_initial: Duration = 1.0
    backoff_cap: Duration = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt ``attempt + 1``: full-jitter exponential, at least Retry-After."""
        ceiling = min(self.backoff_cap, self.backoff_initial * 2 ** max(0, attempt - 1))
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto
        return max(delay, min(retry_after or 0.0, 3600.0))

    def give_up(self, attempt: int, age: float, delay: float) -> str | None:
        """Why a call whose attempt ``attempt`` just failed is not tried again, or None.

        ``age`` is the call's age now, ``delay`` the wait before its next
        attempt.  A call is not retried once it has had all its attempts, or
        when the next one would start past ``max_age``: waiting for a
        try that may not happen helps nobody, and the dead letter says why.
        """
        if attempt >= self.attempts:
            return f"gave up after {attempt} attempt(s) over {format_duration(age)}"
        if age + delay >= self.max_age:
            return (
                f"gave up after {attempt} attempt(s) over {format_duration(age)}: "
                f"the next would start past max_age ({format_duration(self.max_age)})"
            )
        return None


class DeliveryConfig(DeliveryPolicy):
    """The config's ``delivery:`` section: defaults, plus overrides per action name.

    ::

        delivery:
          outbox: true          # false: in memory only (faster, lost on a crash)
          attempts: 8
          max_age: 1d
          concurrency: 4        # calls in flight per target lane
          actions:
            webhook: {attempts: 20, concurrency: 8}
    """

    outbox: bool = True
    synchronous: Literal["normal", "full"] = "normal"
    actions: dict[str, DeliveryPolicy] = Field(default_factory=dict)

    #: merged policies by action name: for_action() runs for every call
    _merged: dict[str, DeliveryPolicy] = PrivateAttr(default_factory=dict)

    def for_action(self, name: str) -> DeliveryPolicy:
        override = self.actions.get(name)
        if override is None:
            return self
        merged = self._merged.get(name)
        if merged is None:
            explicit = override.model_dump(exclude_unset=True)
            merged = self._merged[name] = DeliveryPolicy.model_validate(
                {**self._defaults(), **explicit}
            )
        return merged

    def _defaults(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in DeliveryPolicy.model_fields}
