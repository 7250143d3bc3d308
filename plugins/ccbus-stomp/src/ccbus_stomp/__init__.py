"""ccbus-stomp: the STOMP/ActiveMQ transport ccbus plugins share.

A library, not a plugin: it registers no source or action.  Plugins that
speak JMS through ActiveMQ's STOMP connector (``ccbus-cisco-cvp``,
``ccbus-cucm``) nest :class:`StompOptions` in their options and run a
:class:`StompConnection`, which keeps the connection up (heartbeats,
reconnect with :class:`ccbus.sources.backoff.Backoff` forever, subscriptions
restored), hands frames from stomp.py's thread to the anyio loop, acks only
when told to, and sends JMS TextMessages.  :func:`decode_jms_text` and
:func:`encode_jms_text` convert text to and from the modified UTF-8 a Java
client's TextMessage travels in.

The tests' private ActiveMQ broker and Java JMS peer are in
``ccbus_peers.activemq`` (the ``ccbus-peers`` distribution), not in this one.
"""

from __future__ import annotations

from .connection import NotConnectedError, StompConnection, StompMessage, Subscription
from .jmstext import decode_jms_text, encode_jms_text
from .options import StompOptions

__all__ = [
    "NotConnectedError",
    "StompConnection",
    "StompMessage",
    "StompOptions",
    "Subscription",
    "decode_jms_text",
    "encode_jms_text",
    "queue",
    "topic",
]


def topic(name: str) -> str:
    """The STOMP destination of JMS topic ``name`` on ActiveMQ."""
    return f"/topic/{name}"


def queue(name: str) -> str:
    """The STOMP destination of JMS queue ``name`` on ActiveMQ."""
    return f"/queue/{name}"
