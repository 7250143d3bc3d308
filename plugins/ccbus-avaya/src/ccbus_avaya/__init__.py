"""ccbus-avaya: Avaya Experience Platform agent and engagement events for ccbus.

This module only wires the plugin into ccbus (hook implementations); each
job lives in its own module:

``options``           the source's options (what ``ccbus check`` validates)
``protocol``          the AsyncAPI messages and schema, shared by source and simulator
``auth``              OAuth2 client-credentials tokens from the A&A service
``subscription``      the Notification API's subscription REST call
``source``            the WebSocket connection loop (subscribe, authenticate, ping, renew)
``webhook_transport`` the same notifications posted to ccbus's HTTP listener
``intake``            decode, validate and map one message inside ``ctx.convert``; emit
``mapping``           native ``avaya.*`` events and the canonical ones
``simulator``         Avaya's side, for tests, the demo, the benchmark and admins
``scenarios``         realistic agent and engagement sequences for the simulator
``cli``               ``ccbus simulate avaya``
``demo``              the live source ``ccbus demo`` runs against the simulator
"""

from __future__ import annotations

import click

import ccbus
from ccbus import DemoSource, LoadedConfig, Source, SourceContext, SourceSpec

from .options import AvayaOptions

__all__ = ["create_source"]


def create_source(ctx: SourceContext) -> Source:
    """The source for ``ctx``'s transport: WebSocket (default) or webhook."""
    if ctx.options.transport == "webhook":
        from .webhook_transport import WebhookSource

        return WebhookSource(ctx)
    from .source import WebSocketSource

    return WebSocketSource(ctx)


@ccbus.hookimpl
def register_event_types() -> dict[str, list[str] | None]:
    """``avaya.<event>`` of every notification the document describes, with its fields."""
    from .protocol import BODY_SCHEMAS

    return {f"avaya.{name}": sorted(fields) for name, fields in BODY_SCHEMAS.items()}


@ccbus.hookimpl
def register_sources() -> list[SourceSpec]:
    return [
        SourceSpec(
            name="avaya",
            options=AvayaOptions,
            factory=create_source,
            description="Avaya Experience Platform agent & engagement events "
            "(Notification API: WebSocket or webhook).",
        )
    ]


@ccbus.hookimpl
def register_simulators() -> list[click.Command]:
    from .cli import simulate_avaya

    return [simulate_avaya]


@ccbus.hookimpl
def register_demo_sources() -> list[DemoSource]:
    from .demo import demo_source

    return [demo_source()]


@ccbus.hookimpl
def check_config(config: LoadedConfig) -> list[str]:
    """A webhook transport needs ccbus's HTTP listener: say so before anything starts."""
    problems = []
    for name, source in config.config.sources.items():
        if source.plugin != "avaya" or source.options.get("transport") != "webhook":
            continue
        if not config.config.http.enabled:
            where = config.where("sources", name, "options", "transport")
            problems.append(
                f"{where}: sources.{name}: transport 'webhook' receives notifications on the "
                "HTTP listener, which is disabled (set http.enabled: true and http.listen)"
            )
    return problems
