"""Why a connected period ended, as the source's loop decides what to do next.

Each derives from ccbus's own source errors, so the bus and a reader see the same tree::

    ccbus.SourceError
     ├── ccbus.SourceNotReady
     │    └── Transient     retry after the backoff delay (network, timeouts, a dropped hub)
     ├── ccbus.SourceAuthFailed
     │    └── Unauthorized  the REST API or the hub answered 401/403: say which user id,
     │                      fetch a fresh token and retry after the backoff delay
     └── HubError           a hub method answered with an error (the call fails, the
                            connection stays)
"""

from __future__ import annotations

from ccbus import SourceAuthFailed, SourceError, SourceNotReady

__all__ = ["HubError", "Transient", "Unauthorized"]


class Transient(SourceNotReady):
    """Raised when something may work on the next attempt: the loop backs off and retries."""


class Unauthorized(SourceAuthFailed):
    """Raised on a 401/403 from the token call, negotiate or the WebSocket upgrade."""


class HubError(SourceError):
    """Raised when a hub method's completion carries an error instead of a result."""
