"""Every exception ccbus raises on purpose, in one place.

::

    CcbusError
    ├── ConfigError          a config or rule file is wrong (file, line, key)
    │   └── RuleError        one rule is wrong; the others still load
    ├── ExpressionError      an expression or template cannot compile or evaluate
    │   ├── ExpressionSyntaxError   not valid syntax, or outside the rule grammar
    │   └── EvaluationError         valid, but failed for this event
    │       ├── MissingField        the event lacks a field the expression reads
    │       └── OverBudget          the event used up its time budget (``event_budget``)
    ├── NotLeading           this group member stands by: events go to the leader
    ├── PluginError          a plugin failed to import or registered something broken
    ├── SourceError          a source cannot go on as it is
    │   ├── SourceNotReady          the peer is away or refuses for now: retry later
    │   ├── SourceAuthFailed        credentials were refused: fix them, then it retries
    │   └── RefusedInput            one message cannot be used: dead letter, go on
    └── ActionError          an action failed
        ├── RetryableActionError    may succeed later (timeout, 5xx, broker away)
        └── PermanentActionError    will never succeed (4xx, bad parameters)

Errors carry where they happened (``location``) so that a message shown to
an admin can always name the file and line or the rule and event.
"""

from __future__ import annotations

__all__ = [
    "ActionError",
    "CcbusError",
    "ConfigError",
    "EvaluationError",
    "ExpressionError",
    "ExpressionSyntaxError",
    "MissingField",
    "NotLeading",
    "OverBudget",
    "PermanentActionError",
    "PluginError",
    "RetryableActionError",
    "RefusedInput",
    "RuleError",
    "SourceAuthFailed",
    "SourceError",
    "SourceNotReady",
]


class CcbusError(Exception):
    """Base of every error ccbus raises on purpose."""


class ConfigError(CcbusError):
    """A config or rule file is wrong; ``location`` is ``file:line[:col]``."""

    def __init__(self, message: str, location: str | None = None, *, detail: str = "") -> None:
        self.message = message
        self.location = location
        #: Lines shown under the one-line message by ``ccbus check`` and friends (the
        #: expression with a caret under the column); logs keep to the one line.
        self.detail = detail
        super().__init__(f"{location}: {message}" if location else message)

    def describe(self) -> str:
        """The message, and under it the detail, for a person at a terminal."""
        return f"{self}\n{self.detail}" if self.detail else str(self)


class NotLeading(CcbusError):
    """An event reached a group member that stands by; the message names the leader.

    The HTTP listener answers it with 503, so a sender retries (another member).
    """


class RuleError(ConfigError):
    """One rule failed validation; it is skipped and the others load."""


class ExpressionError(CcbusError):
    """An expression or template could not be compiled or evaluated."""


class ExpressionSyntaxError(ExpressionError):
    """Raised at load time: the text is not an expression the rule grammar allows.

    ``source`` and ``column`` (1-based) say where, when known: :attr:`caret` shows it.
    """

    def __init__(self, message: str, *, source: str | None = None,
                 column: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.column = column

    @property
    def caret(self) -> str:
        """The expression and a caret under the column, as Python shows a syntax error."""
        if self.source is None or self.column is None or "\n" in self.source:
            return ""
        return f"    {self.source}\n    {' ' * (self.column - 1)}^"


class EvaluationError(ExpressionError):
    """Raised at run time: the expression is valid but failed on this event."""


class MissingField(EvaluationError):
    """The expression reads a field or key the event does not have.

    Rules treat this as "condition false" and count it, because vendor
    payloads routinely omit optional fields.
    """


class OverBudget(EvaluationError):
    """An event used up its time budget before this rule or action was done.

    One event's rules and templates share ``event_budget`` (see
    :mod:`ccbus.rules.budget`), so no event, however crafted, holds the event
    loop longer than that: the rule counts as not matching, the action as
    failed to render, and the bus goes on with the next event.
    """


class PluginError(CcbusError):
    """A plugin failed to import, or registered something that cannot work."""


class SourceError(CcbusError):
    """A source cannot go on as it is; the subclasses say what the bus and admin do."""


class SourceNotReady(SourceError):
    """The peer is away or refuses for now (a broker down, a 503): the source retries
    with backoff, and says ``reconnecting``."""


class SourceAuthFailed(SourceError):
    """The peer refused the source's credentials: retrying with the same ones will not
    help, so the message says which credential to fix (the source still retries, slowly)."""


class RefusedInput(SourceError):
    """One message from a peer cannot be used (not JSON, not UTF-8, missing a field).

    Raised inside :meth:`ccbus.SourceContext.convert`: the message becomes a dead
    letter with ``reason`` (also the ``source_bad_input`` counter's label) and
    ``detail``, and the source goes on with the next one.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ActionError(CcbusError):
    """An action failed."""


class RetryableActionError(ActionError):
    """An action failed in a way that may succeed later; it will be retried.

    ``retry_after`` (seconds) is honoured as the earliest next attempt, e.g.
    from an HTTP 429's ``Retry-After``.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentActionError(ActionError):
    """An action failed in a way that will never succeed; it is not retried."""
