"""``ccbus simulate enreach`` (the RTE simulator) and ``ccbus enreach available|active|status``.

::

    ccbus simulate enreach                       # free port on 127.0.0.1; plays the
                                                 # contact-center scenario every 15 s
    ccbus simulate enreach --port 9080 --scenario none --token-ttl 5m
    ccbus simulate enreach --ws-ping-every 20s   # RFC 6455 pings; no pong in 10 s: cut off
    ccbus simulate enreach inject restart --url http://127.0.0.1:9080
    ccbus simulate enreach inject publish UserStatus a1eeb030-... --url ...

    ccbus enreach available -c ccbus.yaml        # the hub's AvailableSubscriptions
    ccbus enreach active -c ccbus.yaml           # the hub's ActiveSubscriptions
    ccbus enreach status --url http://127.0.0.1:8787 --source enreach-prod

The ``enreach`` commands ask a *running* ccbus: its source holds the hub
connection (subscriptions belong to a connection, so a second connection
would see none), and answers on ccbus's local HTTP listener
(``GET /enreach/<source>/available`` ...).  ``-c`` finds the listener's
address and the source's name in the config; ``--url``/``--source`` say them
directly.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import click
import httpx

from ccbus import click_duration, simulator_command

from .simulator import DEFAULT_SECRET, DEFAULT_USERNAME, SCENARIOS, RteSimulator

__all__ = ["enreach_group", "simulate_enreach"]

FAULTS = ("restart", "drop", "deny", "publish", "scenario", "blast", "status")


# ---------------------------------------------------------------------------
# ccbus simulate enreach


@click.group(name="enreach", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, help="Port; 0 picks a free one.")
@click.option("--username", default=DEFAULT_USERNAME, show_default=True)
@click.option("--secret", default=DEFAULT_SECRET, show_default=True)
@click.option("--token-ttl", default="1h", callback=click_duration, show_default=True)
@click.option(
    "--keepalive", default="15s", callback=click_duration, show_default=True,
    help="Hub ping period.",
)
@click.option(
    "--client-timeout", default="30s", callback=click_duration, show_default=True,
    help="Drop a client silent this long.",
)
@click.option(
    "--ws-ping-every", default=None, callback=click_duration,
    help="Send WebSocket clients an RFC 6455 ping this often (default: never).",
)
@click.option(
    "--ws-pong-within", default="10s", callback=click_duration, show_default=True,
    help="With --ws-ping-every: close a connection whose pong is this late.",
)
@click.option(
    "--wire-case", type=click.Choice(["camel", "pascal"]), default="camel", show_default=True,
    help="Field names of the event data sent.",
)
@click.option(
    "--scenario",
    type=click.Choice([*SCENARIOS, "none"]),
    default="contact-center",
    show_default=True,
    help="What to play while a client is subscribed.",
)
@click.option(
    "--every", default="15s", callback=click_duration, show_default=True,
    help="Pause between runs of the scenario (0: play once).",
)
@click.option("--speed", default=1.0, show_default=True, help="2 plays twice as fast.")
@click.pass_context
def simulate_enreach(
    ctx: click.Context,
    host: str,
    port: int,
    username: str,
    secret: str,
    token_ttl: float,
    keepalive: float,
    client_timeout: float,
    ws_ping_every: float | None,
    ws_pong_within: float,
    wire_case: str,
    scenario: str,
    every: float,
    speed: float,
) -> None:
    """Enreach's REST token call and RTE SignalR hub, with a demo organisation."""
    if ctx.invoked_subcommand is not None:
        return
    simulator = RteSimulator(
        host=host,
        port=port,
        username=username,
        secret=secret,
        token_ttl=token_ttl,
        keepalive=keepalive,
        client_timeout=client_timeout,
        wire_case=wire_case,
        ws_ping_every=ws_ping_every,
        ws_pong_within=ws_pong_within,
    )
    anyio.run(_serve, simulator, scenario, every, speed)


async def _serve(simulator: RteSimulator, scenario: str, every: float, speed: float) -> None:
    async with simulator:
        click.echo(f"Enreach RTE simulator listening on {simulator.url}")
        org = simulator.org
        click.echo("\nUse it from a ccbus config:\n\nsources:\n  enreach-sim:\n    plugin: enreach")
        click.echo("    options:")
        for key, value in simulator.source_options().items():
            click.echo(f"      {key}: {json.dumps(value)}")
        click.echo("      subscriptions:\n        users:")
        for user, name in org.users.items():
            click.echo(f"          {user}: [UserStatus, UserAvailability]   # {name}")
        click.echo("        queues:")
        for queue, name in org.queues.items():
            click.echo(f"          {queue}: [QueueStatus]   # {name}")
        click.echo("        call_lists:")
        for call_list, name in org.call_lists.items():
            click.echo(f"          {call_list}: [CallbackChanged]   # {name}")
        click.echo(
            f"\nFaults: ccbus simulate enreach inject {{{','.join(FAULTS)}}} --url {simulator.url}"
            "\nCtrl-C stops it."
        )
        sys.stdout.flush()
        if scenario != "none":
            simulator.play_forever(SCENARIOS[scenario], every, speed)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break


@simulate_enreach.command()
@click.argument("fault", type=click.Choice(FAULTS))
@click.argument("values", nargs=-1)
@click.option(
    "--url",
    envvar="CCBUS_ENREACH_SIMULATOR",
    required=True,
    help="The simulator's base URL (or $CCBUS_ENREACH_SIMULATOR).",
)
@click.option("--fields", default=None, help="publish: JSON object of fields to set.")
def inject(fault: str, values: tuple[str, ...], url: str, fields: str | None) -> None:
    """Inject FAULT into a running simulator.

    \b
    restart                 a hub restart: connections closed, every token invalid
    drop                    close every connection (tokens stay valid)
    deny ENTITY             refuse subscriptions to ENTITY (Unauthorized)
    publish EVENT ENTITY    send EVENT for ENTITY to its subscribers (--fields '{...}')
    scenario [NAME]         play a scenario (contact-center)
    blast [N]               send N UserStatus events flat out (10000)
    status                  counters, clients and their subscriptions
    """
    base = url.rstrip("/")
    params: dict[str, Any] = {}
    if fault == "deny":
        if len(values) != 1:
            raise click.UsageError("deny needs an ENTITY id")
        params = {"entity": values[0]}
    elif fault == "publish":
        if len(values) != 2:
            raise click.UsageError("publish needs EVENT and ENTITY")
        params = {"event": values[0], "entity": values[1]}
        if fields:
            params["fields"] = json.loads(fields)
    elif fault == "scenario":
        params = {"name": values[0] if values else "contact-center"}
    elif fault == "blast":
        params = {"count": int(values[0]) if values else 10_000}
    simulator_command(base, fault, params)


# ---------------------------------------------------------------------------
# ccbus enreach available|active|status


def _target(config: Path | None, url: str | None, source: str | None) -> tuple[str, str]:
    """The listener's base URL and the source's name, from the options or the config."""
    if config is not None:
        from ccbus import ConfigError, load_config

        try:
            loaded = load_config(config)
        except (ConfigError, OSError) as err:
            raise click.ClickException(f"cannot read {config}: {err}") from None
        http = loaded.config.http
        if url is None:
            if not http.enabled:
                raise click.ClickException(
                    f"{config}: the HTTP listener is disabled (http.enabled: false); "
                    "the running source can only be asked through it"
                )
            host = "127.0.0.1" if http.host in ("0.0.0.0", "") else http.host
            host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
            url = f"http://{host}:{http.port}"
        if source is None:
            names = [n for n, s in loaded.config.sources.items() if s.plugin == "enreach"]
            if len(names) != 1:
                listed = ", ".join(names) or "none"
                raise click.ClickException(
                    f"{config} has {len(names)} enreach sources ({listed}): name one with --source"
                )
            source = names[0]
    if url is None or source is None:
        raise click.UsageError("give -c CONFIG, or --url and --source")
    return url.rstrip("/"), source


def _ask(config: Path | None, url: str | None, source: str | None, what: str) -> Any:
    base, name = _target(config, url, source)
    address = f"{base}/enreach/{name}/{what}"
    try:
        with httpx.Client(trust_env=False, timeout=30) as client:
            response = client.get(address)
    except httpx.HTTPError as err:
        raise click.ClickException(
            f"cannot reach ccbus at {base} ({type(err).__name__}: {err}); is `ccbus run` running?"
        ) from None
    if response.status_code == 404:
        raise click.ClickException(f"ccbus at {base} has no enreach source {name!r}")
    try:
        doc = response.json()
    except ValueError:
        raise click.ClickException(f"{address} answered {response.status_code}") from None
    if response.status_code >= 400:
        raise click.ClickException(f"{name}: {doc.get('error', doc)}")
    return doc


_common = [
    click.option("-c", "--config", type=click.Path(path_type=Path, dir_okay=False)),
    click.option("--url", help="The running ccbus's listener, e.g. http://127.0.0.1:8787."),
    click.option("--source", help="The enreach source instance (if the config has several)."),
    click.option("--json", "as_json", is_flag=True, help="Print the hub's answer as JSON."),
]


def _with_common(func: Any) -> Any:
    for option in reversed(_common):
        func = option(func)
    return func


@click.group(name="enreach")
def enreach_group() -> None:
    """Ask a running ccbus's enreach source about its RTE hub connection."""


@enreach_group.command()
@_with_common
def available(config: Path | None, url: str | None, source: str | None, as_json: bool) -> None:
    """The event names the hub offers (AvailableSubscriptions)."""
    doc = _ask(config, url, source, "available")
    names = doc.get("available") or []
    if as_json:
        click.echo(json.dumps(names, indent=2))
        return
    for name in names:
        click.echo(name)


@enreach_group.command()
@_with_common
def active(config: Path | None, url: str | None, source: str | None, as_json: bool) -> None:
    """This connection's subscriptions on the hub (ActiveSubscriptions)."""
    doc = _ask(config, url, source, "active")
    items = doc.get("active") or []
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo(f"{doc.get('source')}: no active subscriptions")
    for item in items:
        if not isinstance(item, dict):
            click.echo(str(item))
            continue
        lowered = {str(k).lower(): v for k, v in item.items()}
        click.echo(
            f"{lowered.get('entitytype', '?'):<9} {lowered.get('entityid', '?')}  "
            f"{lowered.get('eventtype', '?')}"
        )


@enreach_group.command()
@_with_common
def status(config: Path | None, url: str | None, source: str | None, as_json: bool) -> None:
    """The source's connection, wanted and active subscriptions, and counters."""
    doc = _ask(config, url, source, "status")
    click.echo(json.dumps(doc, indent=2))
