"""What can go wrong talking to Avaya, sorted by what the source should do about it.

The connection loop in :mod:`ccbus_avaya.source` decides how long to wait
before the next attempt from the exception's class alone:

``RetryNow``
    a cached token or subscription turned out stale; the next attempt uses
    fresh ones, so it starts at once (a second failure is then transient).
``Transient``
    server errors, timeouts, dropped connections, a missing pong: retry
    with jittered exponential backoff.
``Misconfigured``
    the server says our request or credentials are wrong; retrying fast
    cannot help, so it is logged once, the state becomes ``misconfigured``
    and the source retries slowly (``misconfigured_retry``).
"""

from __future__ import annotations

__all__ = ["AvayaError", "Misconfigured", "RetryNow", "Transient"]


class AvayaError(Exception):
    """Base of the plugin's own errors."""


class Transient(AvayaError):
    """Retry after a backoff delay."""


class RetryNow(AvayaError):
    """Retry at once: a stale token or subscription was dropped and will be replaced."""


class Misconfigured(AvayaError):
    """Our configuration or requests are wrong; retry slowly, and say so once."""
