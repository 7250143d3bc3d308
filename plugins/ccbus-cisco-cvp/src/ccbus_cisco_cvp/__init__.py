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


@ccbus.hookimpl
def check_config(config: ccbus.LoadedConfig) -> list[str]:
    """In a group (``cluster:``), every member must subscribe as the same durable client.

    The broker keeps a durable subscription per client id: a client id that
    differs per instance (say ``${HOSTNAME}``) leaves the events published
    during a failover in a subscription nobody reads, and ``durable: false``
    drops them.  With one fixed client id the broker refuses a second
    connection, which is right: only the leader connects.
    """
    cluster = config.config.cluster
    if cluster is None:
        return []
    problems = []
    for name, source in config.config.sources.items():
        if source.plugin != "cisco-cvp" or not isinstance(source.options.get("broker"), dict):
            continue
        broker = source.options["broker"]
        client_id = str(broker.get("client_id") or "")
        fix = (f"set sources.{name}.options.broker.client_id to one fixed value, the same on "
               f"every instance of group {cluster.group} (e.g. ccbus-{cluster.group}-{name}), "
               "with durable: true")
        if source.options.get("durable") is False:
            where = config.where("sources", name, "options", "durable")
            problems.append(f"{where}: sources.{name}: a group loses CVP events published "
                            f"during a failover without a durable subscription: {fix}")
        elif not client_id or cluster.instance in client_id:
            where = config.where("sources", name, "options", "broker",
                                 *(("client_id",) if client_id else ()))
            why = ("has no client_id" if not client_id else
                   f"client_id {client_id!r} contains this instance's name {cluster.instance!r}")
            problems.append(f"{where}: sources.{name}: in a group the CVP broker {why}: {fix}")
    return problems
