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
    ``BadCredentials``, the token endpoint refusing the client credentials,
    is one of these.

They sit in the core's tree (:mod:`ccbus.errors`): ``Transient`` and
``RetryNow`` are :class:`~ccbus.SourceNotReady`, ``Misconfigured`` a
:class:`~ccbus.SourceError`, ``BadCredentials`` also a
:class:`~ccbus.SourceAuthFailed`.
"""

from __future__ import annotations

from ccbus import SourceAuthFailed, SourceError, SourceNotReady

__all__ = ["AvayaError", "BadCredentials", "Misconfigured", "RetryNow", "Transient"]


class AvayaError(SourceError):
    """Base of the plugin's own errors."""


class Transient(AvayaError, SourceNotReady):
    """Retry after a backoff delay."""


class RetryNow(AvayaError, SourceNotReady):
    """Retry at once: a stale token or subscription was dropped and will be replaced."""


class Misconfigured(AvayaError):
    """Our configuration or requests are wrong; retry slowly, and say so once."""


class BadCredentials(Misconfigured, SourceAuthFailed):
    """The token endpoint refused ``client_id``/``client_secret``: fix them (retried slowly)."""
