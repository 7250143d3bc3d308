"""The plugin's own errors, in the core's tree (:mod:`ccbus.errors`)::

    ccbus.SourceError
     └── ccbus.RefusedInput
          └── ProtocolError   a message that is not an event (or command) of the guide

A command the Connector answers with an error is the core's
:class:`~ccbus.RetryableActionError` or :class:`~ccbus.PermanentActionError`,
as the guide says of that error (``ccbus_cucm.protocol.ERRORS``).
"""

from __future__ import annotations

from ccbus import RefusedInput

__all__ = ["ProtocolError"]


class ProtocolError(RefusedInput, ValueError):
    """A message that is not an event of the guide; ``reason`` is a short counter label.

    A :class:`~ccbus.RefusedInput`: raised inside ``ctx.convert`` it makes the
    message a dead letter with that reason.  Still a :class:`ValueError`, as it was.
    """
