"""ccbus-enreach: the Enreach Real-Time Engine (RTE) for ccbus, over SignalR with signalrcore.

This module only wires the plugin into ccbus (hook implementations); each
job lives in its own module:

``options``     the source's options and subscriptions (what ``ccbus check`` validates)
``protocol``    the RTE document's events, hub methods and messages
``auth``        the REST token call (a fresh JWT for every connection)
``hub``         one signalrcore connection, bridged into the anyio loop
``source``      the connection loop: token, connect, subscribe, receive, ping, restore
``intake``      check, de-duplicate, drop expired, map and emit one message
``mapping``     native ``enreach.*`` events and the canonical ones
``actions``     ``enreach.subscribe``, ``enreach.unsubscribe``, ``enreach.unsubscribe_all``
``simulator``   the REST token call and the RTE hub, for tests, demo, benchmark and admins
``scenarios``   realistic event streams for the simulator
``cli``         ``ccbus simulate enreach`` and ``ccbus enreach available|active``
``demo``        the live source ``ccbus demo`` runs against the simulator
"""

from __future__ import annotations

import click

import ccbus
from ccbus import ActionSpec, DemoSource, Source, SourceContext, SourceSpec

from .options import EnreachOptions

__all__ = ["create_source"]


def create_source(ctx: SourceContext) -> Source:
    from .source import EnreachSource

    return EnreachSource(ctx)


@ccbus.hookimpl
def register_event_types() -> dict[str, list[str] | None]:
    """``enreach.<EventType>`` of the RTE catalogue, with the fields of its example."""
    from .protocol import event_fields

    return {f"enreach.{name}": fields for name, fields in event_fields().items()}


@ccbus.hookimpl
def register_sources() -> list[SourceSpec]:
    return [
        SourceSpec(
            name="enreach",
            options=EnreachOptions,
            factory=create_source,
            description="Enreach RTE user, queue and call list events (SignalR hub).",
        )
    ]


@ccbus.hookimpl
def register_actions() -> list[ActionSpec]:
    from .actions import actions

    return actions()


@ccbus.hookimpl
def register_simulators() -> list[click.Command]:
    from .cli import simulate_enreach

    return [simulate_enreach]


@ccbus.hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import enreach_group

    cli.add_command(enreach_group)


@ccbus.hookimpl
def register_demo_sources() -> list[DemoSource]:
    from .demo import demo_source

    return [demo_source()]
