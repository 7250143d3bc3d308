"""The options of a ``cisco-cvp`` source, as written under ``options:`` in the config.

Two inputs, either or both: the JMS topics on the broker (``broker:``, a
:class:`ccbus_stomp.StompOptions`) and syslog listeners (``syslog:``).  Each
of the document's ten channels has its topic under ``topics:``; every key
has a default, so the smallest config is a broker URL.  Unknown keys are
errors at ``ccbus check``, with file, line and a suggestion, including
inside ``broker:``, ``topics:`` and ``syslog:``.
"""

from __future__ import annotations

from ccbus_stomp import StompOptions
from pydantic import Field, model_validator

from ccbus import Duration, Options

from .protocol import CHANNELS

__all__ = ["CvpOptions", "SyslogOptions", "Topics"]


class Topics(Options):
    """The ActiveMQ topic of each channel (default: the channel's name); null turns it off.

    ``tests/test_protocol.py`` checks that these are exactly the document's channels.
    """

    calls_started: str | None = "cvp/calls/started"
    calls_ended: str | None = "cvp/calls/ended"
    calls_transferred: str | None = "cvp/calls/transferred"
    calls_queued: str | None = "cvp/calls/queued"
    calls_application_invoked: str | None = "cvp/calls/application-invoked"
    calls_error: str | None = "cvp/calls/error"
    device_status_changed: str | None = "cvp/system/device-status-changed"
    threshold_exceeded: str | None = "cvp/system/threshold-exceeded"
    service_state_changed: str | None = "cvp/system/service-state-changed"
    config_deployed: str | None = "cvp/deployment/config-deployed"


class SyslogOptions(Options):
    """Syslog listeners (RFC 3164 and RFC 5424, both on each listener)."""

    #: ``host:port`` for datagrams, e.g. ``0.0.0.0:514``; null: no UDP listener.
    udp: str | None = "127.0.0.1:5514"
    #: ``host:port`` for TCP (octet-counted or newline-framed, RFC 6587); null: none.
    tcp: str | None = None
    #: Datagrams waiting for the bus beyond this are dropped (and counted): UDP cannot wait.
    queue_size: int = Field(default=10_000, gt=0)
    #: A TCP frame longer than this closes that connection (and is counted).
    max_message_bytes: int = Field(default=64 * 1024, gt=0)
    #: Open TCP connections at most; more are refused (and counted).
    max_connections: int = Field(default=100, gt=0)
    #: A TCP message that has begun to arrive must be complete within this; a slower
    #: sender is disconnected (and counted as ``slow_message``), so a trickle cannot
    #: hold a connection slot.
    read_timeout: Duration = Field(default=10.0, gt=0)
    #: A TCP connection that sends nothing for this long is closed (logged, not counted:
    #: senders reconnect with their next message). It frees the slots of peers that
    #: vanished without closing and of connections that never send. null: never.
    idle_timeout: Duration | None = Field(default=300.0, gt=0)
    #: The UDP socket's receive buffer in bytes (``SO_RCVBUF``; the kernel doubles it
    #: and caps it at ``net.core.rmem_max``); null: the system default. Datagrams that
    #: arrive while it is full are dropped by the kernel, counted as ``kernel_drop``.
    receive_buffer: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SyslogOptions:
        for name in ("udp", "tcp"):
            value = getattr(self, name)
            if value is not None:
                host, sep, port = value.rpartition(":")
                if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
                    raise ValueError(f"syslog.{name} {value!r}: expected host:port")
        if self.udp is None and self.tcp is None:
            raise ValueError("syslog: set udp, tcp or both (or leave syslog out)")
        return self


class CvpOptions(Options):
    """Options of one ``cisco-cvp`` source instance (see the plugin README for each)."""

    #: The ActiveMQ broker CVP publishes to; null for a syslog-only source.
    broker: StompOptions | None = None
    topics: Topics = Field(default_factory=Topics)
    #: Durable topic subscriptions (need ``broker.client_id``): events published
    #: while ccbus is down are delivered when it returns.
    durable: bool = True
    #: Durable subscriptions are named ``<prefix><channel key>``.
    subscription_prefix: str = "ccbus-"
    #: Reject payloads whose eventType belongs to another channel than the topic's.
    strict_channel: bool = True
    #: Syslog listeners; null: none.
    syslog: SyslogOptions | None = None
    #: How many calls' queue and caller are remembered for call.abandoned.
    remember_calls: int = Field(default=10_000, gt=0)

    @model_validator(mode="after")
    def _check(self) -> CvpOptions:
        if self.broker is None and self.syslog is None:
            raise ValueError("set 'broker' (JMS topics), 'syslog', or both")
        if self.broker is not None and self.durable and not self.broker.client_id:
            raise ValueError(
                "durable subscriptions need 'broker.client_id' (unique per ccbus instance), "
                "or set 'durable: false'"
            )
        if self.broker is not None and not any(self.topic_map().values()):
            raise ValueError("every topic is null: no channel to subscribe to")
        return self

    def topic_map(self) -> dict[str, str | None]:
        """Channel key -> topic (None: off)."""
        return {c.key: getattr(self.topics, c.key) for c in CHANNELS}
