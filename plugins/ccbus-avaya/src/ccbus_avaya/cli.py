"""``ccbus simulate avaya``: run the simulator, and inject faults into a running one.

::

    ccbus simulate avaya                      # free port on 127.0.0.1; plays the
                                              # contact-center scenario every 15 s
    ccbus simulate avaya --port 9443 --scenario none --expires-in 2m
    ccbus simulate avaya inject drop --url http://127.0.0.1:9443
    ccbus simulate avaya inject auth-status INTERNAL_SERVER_ERROR --count 3 --url ...
    ccbus simulate avaya inject pongs off --url ...

The running simulator prints the ``sources:`` block to paste into a ccbus
config.  ``inject`` talks to the simulator's control API (``POST /_sim/...``).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from ccbus import click_duration, simulator_command

from .protocol import AuthStatus
from .simulator import (
    DEFAULT_ACCOUNT,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    SCENARIOS,
    AvayaSimulator,
)

__all__ = ["simulate_avaya"]

FAULTS = (
    "drop",
    "expire",
    "reject-token",
    "auth-status",
    "pongs",
    "fail-token",
    "publish",
    "scenario",
    "blast",
    "status",
)


@click.group(name="avaya", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, help="Port; 0 picks a free one.")
@click.option("--account", default=DEFAULT_ACCOUNT, show_default=True, help="Account id.")
@click.option("--client-id", default=DEFAULT_CLIENT_ID, show_default=True)
@click.option("--client-secret", default=DEFAULT_CLIENT_SECRET, show_default=True)
@click.option(
    "--expires-in", default="15m", callback=click_duration, show_default=True,
    help="Subscription lifetime.",
)
@click.option(
    "--ping-interval", default=300, show_default=True,
    help="Seconds without a ping before a connection is closed.",
)
@click.option("--token-ttl", default="1h", callback=click_duration, show_default=True)
@click.option(
    "--scenario",
    type=click.Choice([*SCENARIOS, "none"]),
    default="contact-center",
    show_default=True,
    help="What to play once a client is connected.",
)
@click.option(
    "--every", default="15s", callback=click_duration, show_default=True,
    help="Pause between runs of the scenario (0: play once).",
)
@click.option("--speed", default=1.0, show_default=True, help="2 plays twice as fast.")
@click.pass_context
def simulate_avaya(
    ctx: click.Context,
    host: str,
    port: int,
    account: str,
    client_id: str,
    client_secret: str,
    expires_in: float,
    ping_interval: int,
    token_ttl: float,
    scenario: str,
    every: float,
    speed: float,
) -> None:
    """Avaya's token service, Notification API and Agent & Engagement WebSocket channel."""
    if ctx.invoked_subcommand is not None:
        return
    simulator = AvayaSimulator(
        host=host,
        port=port,
        account_id=account,
        client_id=client_id,
        client_secret=client_secret,
        expires_in=expires_in,
        ping_interval=ping_interval,
        token_ttl=token_ttl,
    )
    anyio.run(_serve, simulator, scenario, every, speed)


async def _serve(simulator: AvayaSimulator, scenario: str, every: float, speed: float) -> None:
    async with simulator:
        click.echo(f"Avaya simulator listening on {simulator.url}", nl=True)
        options = simulator.source_options()
        click.echo("\nUse it from a ccbus config:\n\nsources:\n  avaya-sim:\n    plugin: avaya\n"
                   "    options:")
        for key, value in options.items():
            click.echo(f"      {key}: {json.dumps(value)}")
        click.echo(
            f"\nFaults: ccbus simulate avaya inject {{{','.join(FAULTS)}}} --url {simulator.url}"
            "\nCtrl-C stops it."
        )
        sys.stdout.flush()
        async with anyio.create_task_group() as tg:
            if scenario != "none":
                tg.start_soon(_scenario_forever, simulator, scenario, every, speed)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()


async def _scenario_forever(
    simulator: AvayaSimulator, scenario: str, every: float, speed: float
) -> None:
    while True:
        await simulator.wait_for(lambda: bool(simulator.connected_sessions()), within=10**9)
        sent = await simulator.play(SCENARIOS[scenario](), speed=speed)
        click.echo(f"played {scenario}: {sent} notifications")
        if every <= 0:
            return
        await anyio.sleep(every)


@simulate_avaya.command()
@click.argument("fault", type=click.Choice(FAULTS))
@click.argument("value", required=False)
@click.option(
    "--url",
    envvar="CCBUS_AVAYA_SIMULATOR",
    required=True,
    help="The simulator's base URL (or $CCBUS_AVAYA_SIMULATOR).",
)
@click.option("--count", default=1, show_default=True, help="auth-status, fail-token: how many.")
def inject(fault: str, value: str | None, url: str, count: int) -> None:
    """Inject FAULT into a running simulator.

    \b
    drop                  close every client connection
    expire                expire every subscription now
    reject-token          revoke every token (clients get INVALID_TOKEN mid-session)
    auth-status STATUS    answer the next --count authentications with STATUS
                          (CONFIRMED, INVALID_TOKEN, UNKNOWN_SUBSCRIPTION,
                          INTERNAL_SERVER_ERROR, CONSTRAINT_VIOLATION)
    pongs on|off          answer pings or not (off: a silent, dead connection)
    fail-token [STATUS]   the next --count token requests fail (HTTP 503)
    publish FILE          send a notification body or a full notification (JSON; - is stdin)
    scenario [NAME]       play a scenario (contact-center)
    blast [N]             send N notifications flat out (10000)
    status                show counters, sessions and subscriptions
    """
    base = url.rstrip("/")
    params: dict[str, Any] = {}
    if fault == "auth-status":
        if not value:
            raise click.UsageError("auth-status needs a STATUS")
        status = value.upper()
        names = {s.name: s.value for s in AuthStatus}
        params = {"status": names.get(status.replace("CONNECTION_FAILED_", ""), status),
                  "count": count}
    elif fault == "pongs":
        if value not in ("on", "off"):
            raise click.UsageError("pongs needs 'on' or 'off'")
        params = {"enabled": value == "on"}
    elif fault == "fail-token":
        params = {"count": count, "status": int(value or 503)}
    elif fault == "publish":
        text = sys.stdin.read() if value in (None, "-") else Path(value).read_text()
        doc = json.loads(text)
        params = {"notification": doc} if "body" in doc else {"body": doc}
    elif fault == "scenario":
        params = {"name": value or "contact-center"}
    elif fault == "blast":
        params = {"count": int(value or 10_000)}
    simulator_command(base, fault, params)
