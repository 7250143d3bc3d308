"""ccbus-cucm: call control and events of the CUCM Connector, over ActiveMQ.

This module only wires the plugin into ccbus (hook implementations); each
job lives in its own module:

``options``    the source's options and the actions' parameters (what ``ccbus check`` validates)
``protocol``   the guide's commands, events (``#`` and JSON patterns) and errors
``source``     the client session: topic, Hello until IN_SERVICE, keepalive, events, commands
``ledger``     sent and answered commands on disk, so a retry never resends an answered one
``actions``    ``cucm.login`` ... ``cucm.get_state``: one per command
``mapping``    native ``cucm.*`` events and the canonical ones
``simulator``  a CUCM Connector emulator on queue ``Connector1``
``cli``        ``ccbus simulate cucm``
"""

from __future__ import annotations

import click

import ccbus
from ccbus import ActionSpec, Source, SourceContext, SourceSpec

from .options import CucmOptions

__all__ = ["create_source"]


def create_source(ctx: SourceContext) -> Source:
    from .source import CucmSource

    return CucmSource(ctx)


@ccbus.hookimpl
def register_event_types() -> dict[str, list[str] | None]:
    """``cucm.<kind>`` of the guide's event kinds, and ``cucm.CommandResult``; their fields
    depend on the message pattern the connector uses, so they are not listed."""
    from .protocol import EVENT_KINDS

    declared: dict[str, list[str] | None] = {f"cucm.{kind}": None for kind in EVENT_KINDS}
    declared["cucm.CommandResult"] = None
    return declared


@ccbus.hookimpl
def register_sources() -> list[SourceSpec]:
    return [
        SourceSpec(
            name="cucm",
            options=CucmOptions,
            factory=create_source,
            description="CUCM Connector session over ActiveMQ: agent, dialog and call events; "
            "the cucm.* actions send its commands.",
        )
    ]


@ccbus.hookimpl
def register_actions() -> list[ActionSpec]:
    from .actions import actions

    return actions()


@ccbus.hookimpl
def register_simulators() -> list[click.Command]:
    from .cli import simulate_cucm

    return [simulate_cucm]
