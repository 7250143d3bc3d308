"""ccbus-genesys: Genesys Voice Microservices agent-state and call-thread events over Kafka.

This module only wires the plugin into ccbus (hook implementations); each
job lives in its own module:

``options``      the source's options (what ``ccbus check`` validates)
``catalogue``    the two topics and the 42 event names of the Genesys document
``source``       the consumer group: poll, map (refused records become the core's
                 dead letters), emit, commit; rebalances
``mapping``      native ``genesys.*`` events and the canonical ones
``recorded``     per partition, the offset up to which records are dealt with (kill -9)
``simulator``    Genesys's side: produces scenario records to Kafka
``scenarios``    realistic agent-state and call-thread sequences
``cli``          ``ccbus simulate genesys``
``demo``         the live source ``ccbus demo`` runs against the simulator
"""

from __future__ import annotations

import click

import ccbus
from ccbus import DemoSource, Source, SourceContext, SourceSpec

from .options import GenesysOptions

__all__ = ["create_source"]


def create_source(ctx: SourceContext) -> Source:
    """The consumer-group source for ``ctx``."""
    from .source import GenesysSource

    return GenesysSource(ctx)


@ccbus.hookimpl
def register_event_types() -> dict[str, list[str] | None]:
    """``genesys.<name>`` of the document's 42 event names; the document does not lay
    out their payloads, so their fields are not listed.  A name outside the document
    is still routed: declare it under ``event_types:`` to write a rule for it."""
    from .catalogue import ALL_EVENTS

    return {f"genesys.{name}": None for name in sorted(ALL_EVENTS)}


@ccbus.hookimpl
def register_sources() -> list[SourceSpec]:
    return [
        SourceSpec(
            name="genesys",
            options=GenesysOptions,
            factory=create_source,
            description="Genesys Voice Microservices agent-state & call-thread events "
            "(Kafka consumer group).",
        )
    ]


@ccbus.hookimpl
def register_simulators() -> list[click.Command]:
    from .cli import simulate_genesys

    return [simulate_genesys]


@ccbus.hookimpl
def register_demo_sources() -> list[DemoSource]:
    from .demo import demo_source

    return [demo_source()]
