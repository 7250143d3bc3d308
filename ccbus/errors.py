"""Every exception ccbus raises on purpose, in one place.

::

    CcbusError
    ├── ConfigError          a config or rule file is wrong (file, line, key)
    │   └── RuleError        one rule is wrong; the others still load
    ├── ExpressionError      an expression or template cannot compile or evaluate
    │   ├── ExpressionSyntaxError   not valid syntax, or outside the rule grammar
    │   └── EvaluationError         valid, but failed for this event
    │       └── MissingField        the event lacks a field the expression reads
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

    def __init__(self, message: str, location: str | None = None) -> None:
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class NotLeading(CcbusError):
    """An event reached a group member that stands by; the message names the leader.

    The HTTP listener answers it with 503, so a sender retries (another member).
    """


class RuleError(ConfigError):
    """One rule failed validation; it is skipped and the others load."""


class ExpressionError(CcbusError):
    """An expression or template could not be compiled or evaluated."""


class ExpressionSyntaxError(ExpressionError):
    """Raised at load time: the text is not an expression the rule grammar allows."""


class EvaluationError(ExpressionError):
    """Raised at run time: the expression is valid but failed on this event."""


class MissingField(EvaluationError):
    """The expression reads a field or key the event does not have.

    Rules treat this as "condition false" and count it, because vendor
    payloads routinely omit optional fields.
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
