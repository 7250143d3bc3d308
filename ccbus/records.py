"""The records that stages of the data path hand each other, in one leaf module.

An invocation (one rendered action
call), a render failure, and a rule's trace run.  The pipeline and
the engine make them, the dispatcher and the tracer read them; keeping them here,
importing nothing of those stages, is what keeps the stages from importing each
other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ccbus.actions.api import ActionSpec, idempotency_key
from ccbus.config.secrets import SecretBook
from ccbus.events.envelope import Event

__all__ = [
    "COUNTING", "FIRED", "NO_MATCH", "THROTTLED", "TIMER_ARMED", "TIMER_FIRED", "TIMER_RUNNING",
    "ActionTrace", "Invocation", "RenderFailure", "Run",
]

#: Verdicts (also in the docs): what a rule decided for one event.  For a
#: ``for:`` rule, "no match" also cancels the key's timer.
FIRED, NO_MATCH, THROTTLED, COUNTING, TIMER_ARMED, TIMER_RUNNING, TIMER_FIRED = (
    "fired",
    "no match",
    "throttled",
    "counting",
    "timer armed",
    "timer running",
    "fired (timer)",
)



@dataclass(slots=True)
class ActionTrace:
    """One rendered call of a run and how it ended (so far)."""

    action: str
    index: int
    key: str
    #: The rendered parameters: a model, or (when secrets are configured) the JSON
    #: document with references in place of secrets (see ``SecretBook.seal``).
    params: Any
    outcome: str = "recorded"
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        params = self.params
        if hasattr(params, "model_dump"):
            params = params.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        return {
            "action": self.action,
            "index": self.index,
            "key": self.key,
            "params": params,
            "outcome": self.outcome,
            "error": self.error,
        }


@dataclass(slots=True)
class Run:
    """One evaluation of one rule."""

    at: float
    event: Event
    #: True/False, None without an ``if:``, or ``"error: ..."``.
    condition: bool | str | None
    verdict: str
    actions: list[ActionTrace]
    #: Fell out of its rule's ring: calls rendered for it later are not recorded.
    dropped: bool = False

    def to_dict(self) -> dict[str, Any]:
        event = self.event.to_cloudevent()
        event["time"] = self.event.time.isoformat()
        return {
            "at": self.at,
            "event": event,
            "condition": self.condition,
            "verdict": self.verdict,
            "actions": [a.to_dict() for a in self.actions],
        }


@dataclass(slots=True, kw_only=True)
class Invocation:
    """One action to run: the rendered call of one rule firing on one event."""

    rule: str
    action: str
    index: int
    params: BaseModel
    event: Event
    spec: ActionSpec
    #: Whether the rule's next action waits for this one's result (``previous``).
    #: True when not known (a call read back from the outbox): the bus then looks.
    feeds_next: bool = True
    #: The rule's trace run that made this call, when traces are on: the call's
    #: outcome is recorded there.
    trace: Run | None = field(default=None, repr=False, compare=False)
    _key: str = field(default="", init=False, repr=False, compare=False)

    @property
    def idempotency_key(self) -> str:
        """See :func:`idempotency_key`; built once (the outbox, traces and the action read it)."""
        if not self._key:
            self._key = idempotency_key(self.event, self.rule, self.index)
        return self._key

    def describe(self, secrets: SecretBook | None = None) -> str:
        """``notify(to='ops', body='...')`` for consoles and logs; with ``secrets``, each
        secret shown as the reference the outbox stores (``${secret:crm-token}``)."""
        params = self.params.model_dump(exclude_defaults=True, by_alias=True)
        if secrets:
            params = secrets.seal(params)[0]
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return f"{self.action}({shown})"


class RenderFailure:
    """A call whose parameters could not be rendered: it goes to the dead letters."""

    __slots__ = ("action", "event", "index", "reason", "rule")

    def __init__(self, rule: str, action: str, index: int, event: Event, reason: str) -> None:
        self.rule, self.action, self.index, self.event, self.reason = (
            rule,
            action,
            index,
            event,
            reason,
        )

    def __str__(self) -> str:
        return f"{self.rule}: action {self.index + 1} ({self.action}): {self.reason}"
