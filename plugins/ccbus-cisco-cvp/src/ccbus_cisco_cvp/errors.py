"""The plugin's own errors, in the core's tree (:mod:`ccbus.errors`)::

    ccbus.SourceError
     └── ccbus.RefusedInput
          └── SyslogError   not a syslog message, or a TCP stream out of step

Everything else the source meets is the core's (:class:`~ccbus.RefusedInput`
for a JMS body it cannot use) or the transport's (``ccbus_stomp``).
"""

from __future__ import annotations

from ccbus import RefusedInput

__all__ = ["SyslogError"]


class SyslogError(RefusedInput, ValueError):
    """Not a syslog message; ``reason`` is the counter label, ``detail`` says why.

    A :class:`~ccbus.RefusedInput`: raised inside ``ctx.convert`` it makes the
    message a dead letter with that reason.  Still a :class:`ValueError`, as the
    parser's errors were.
    """
