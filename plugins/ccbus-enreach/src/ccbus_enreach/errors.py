"""Why a connected period ended, as the source's loop decides what to do next.

::

    Exception
     ├── Transient      retry after the backoff delay (network, timeouts, a dropped hub)
     ├── Unauthorized   the REST API or the hub answered 401/403: say which user id,
     │                  fetch a fresh token and retry after the backoff delay
     └── HubError       a hub method answered with an error (the call fails, the
                        connection stays)
"""

from __future__ import annotations

__all__ = ["HubError", "Transient", "Unauthorized"]


class Transient(Exception):
    """Raised when something may work on the next attempt: the loop backs off and retries."""


class Unauthorized(Exception):
    """Raised on a 401/403 from the token call, negotiate or the WebSocket upgrade."""


class HubError(Exception):
    """Raised when a hub method's completion carries an error instead of a result."""
