"""ccbus-cisco-cvp: Cisco Unified CVP call and system events for ccbus.

This module only wires the plugin into ccbus (hook implementations); each
job lives in its own module:

``protocol``     the CVP Call Events AsyncAPI document: channels, messages, schema checks
``options``      the source's options (what ``ccbus check`` validates)
``source``       JMS topics through ActiveMQ's STOMP connector, and the syslog listeners
``syslog``       RFC 5424 / RFC 3164 parsing and RFC 6587 TCP framing
``mapping``      native ``cvp.*`` events and the canonical ones
``scenarios``    realistic call flows and system events
``simulator``    publishes scenarios to ActiveMQ and sends them as syslog
``cli``          ``ccbus simulate cvp``

The transport (reconnects, heartbeats, durable subscriptions, acks) is the
shared ``ccbus-stomp`` library.  There is no ``ccbus demo`` source: CVP's
events travel through an ActiveMQ broker, which the demo does not have.
"""

from __future__ import annotations

import click

import ccbus
from ccbus import Source, SourceContext, SourceSpec

from .options import CvpOptions

__all__ = ["create_source"]


def create_source(ctx: SourceContext) -> Source:
    from .source import CvpSource

    return CvpSource(ctx)


@ccbus.hookimpl
def register_event_types() -> dict[str, list[str] | None]:
    """``cvp.<eventType>`` of every AsyncAPI channel, with the message's fields, and
    ``cvp.syslog`` (its fields depend on the message's format)."""
    from .protocol import CHANNELS

    declared: dict[str, list[str] | None] = {f"cvp.{c.event_type}": sorted(c.fields)
                                             for c in CHANNELS}
    declared["cvp.syslog"] = None
    return declared


@ccbus.hookimpl
def register_sources() -> list[SourceSpec]:
    return [
        SourceSpec(
            name="cisco-cvp",
            options=CvpOptions,
            factory=create_source,
            description="Cisco CVP call and system events (JMS topics on ActiveMQ over "
            "STOMP) and syslog (UDP/TCP, RFC 3164/5424).",
        )
    ]


@ccbus.hookimpl
def register_simulators() -> list[click.Command]:
    from .cli import simulate_cvp

    return [simulate_cvp]
