"""``ccbus simulate cvp``: CVP call flows published to ActiveMQ, and the matching syslog.

::

    ccbus simulate cvp --start-broker                  # a private ActiveMQ (Debian package)
    ccbus simulate cvp --broker stomp://amq:61613 --syslog udp://127.0.0.1:5514
    ccbus simulate cvp --calls 50 --every 0 --malformed --syslog tcp://127.0.0.1:6514

It prints the ``sources:`` block to paste into a ccbus config, then plays
the contact-center scenario (overlapping calls: answered, abandoned,
self-service, failed; threshold alerts, device and service changes, a
deployment) every ``--every``.  ``--malformed`` adds bodies a broken
publisher might send, to see the source's counters and dead letters.
"""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import click
from ccbus_stomp import StompOptions

from ccbus import click_duration

from .scenarios import contact_center, malformed, syslog_lines
from .simulator import CvpSimulator

__all__ = ["simulate_cvp"]


def _syslog_target(value: str) -> tuple[str, tuple[str, int]]:
    parts = urlsplit(value)
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or not parts.port:
        raise click.BadParameter(f"{value!r}: expected udp://host:port or tcp://host:port")
    return parts.scheme, (parts.hostname, parts.port)


@click.command(name="cvp")
@click.option("--broker", default="stomp://127.0.0.1:61613", show_default=True,
              help="STOMP URL of the ActiveMQ broker (stomp:// or stomp+ssl://).")
@click.option("--username", default=None, help="Broker user.")
@click.option("--password", default=None, envvar="CCBUS_CVP_SIM_PASSWORD",
              help="Broker password (or $CCBUS_CVP_SIM_PASSWORD).")
@click.option("--ca-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="CA bundle for stomp+ssl.")
@click.option("--start-broker", is_flag=True,
              help="Start a private ActiveMQ (Debian's activemq package) on free loopback "
              "ports for as long as the simulator runs.")
@click.option("--syslog", "syslog", multiple=True,
              help="Also send syslog: udp://host:port or tcp://host:port (repeatable).")
@click.option("--calls", default=20, show_default=True, help="Calls per run of the scenario.")
@click.option("--every", default="15s", callback=click_duration, show_default=True,
              help="Pause between runs (0: play once and exit).")
@click.option("--pause", default="0.2s", callback=click_duration, show_default=True,
              help="Pause between events.")
@click.option("--seed", default=None, type=int, help="Random seed (the same calls every time).")
@click.option("--malformed", is_flag=True, help="Also publish malformed bodies.")
def simulate_cvp(
    broker: str, username: str | None, password: str | None, ca_file: str | None,
    start_broker: bool, syslog: tuple[str, ...], calls: int, every: float, pause: float,
    seed: int | None, malformed: bool,
) -> None:
    """Cisco CVP: call and system events on ActiveMQ topics, and syslog."""
    targets = [_syslog_target(s) for s in syslog]
    udp = next((t for kind, t in targets if kind == "udp"), None)
    tcp = next((t for kind, t in targets if kind == "tcp"), None)
    private = None
    if start_broker:
        try:  # a test peer: not a dependency of the plugin
            from ccbus_peers.activemq import ActiveMQBroker, activemq_available
        except ModuleNotFoundError as err:
            if err.name not in ("ccbus_peers", "ccbus_peers.activemq"):
                raise
            raise click.ClickException(
                "--start-broker needs the test peers: pip install ccbus-peers"
            ) from None

        reason = activemq_available()
        if reason:
            raise click.ClickException(f"cannot start a broker: {reason}")
        private = ActiveMQBroker(Path(tempfile.mkdtemp(prefix="ccbus-cvp-amq-")), tls=False)
        click.echo(f"starting ActiveMQ in {private.base} ...")
        private.start()
        broker = private.stomp_url
    try:
        options = StompOptions(url=broker, username=username, password=password,
                               ca_file=Path(ca_file) if ca_file else None)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"CVP simulator publishing to {options.safe_url}")
    click.echo("\nUse it from a ccbus config:\n\nsources:\n  cvp-sim:\n    plugin: cisco-cvp\n"
               "    options:\n      broker:\n"
               f"        url: {options.safe_url}\n        client_id: ccbus-cvp-sim")
    if udp or tcp:
        click.echo("      syslog:")
        if udp:
            click.echo(f'        udp: "{udp[0]}:{udp[1]}"')
        if tcp:
            click.echo(f'        tcp: "{tcp[0]}:{tcp[1]}"')
    click.echo("\nCtrl-C stops it.")
    sys.stdout.flush()
    try:
        anyio.run(_serve, CvpSimulator(options, syslog_udp=udp, syslog_tcp=tcp), calls, every,
                  pause, seed, malformed)
    finally:
        if private is not None:
            private.stop()


async def _serve(simulator: CvpSimulator, calls: int, every: float, pause: float,
                 seed: int | None, with_malformed: bool) -> None:
    async with simulator, anyio.create_task_group() as tg:

        async def play_forever() -> None:
            run = 0
            while True:
                items = contact_center(calls, seed=None if seed is None else seed + run)
                await simulator.play(items, pause=pause)
                if with_malformed:
                    for key, body in malformed():
                        await simulator.publish(key, body)
                lines = syslog_lines(items)
                if simulator.syslog_udp or simulator.syslog_tcp:
                    await simulator.send_syslog(lines)
                click.echo(f"played {len(items)} events ({calls} calls)"
                           + (f", {len(lines)} syslog lines" if simulator.syslog_sent else ""))
                run += 1
                if every <= 0:
                    tg.cancel_scope.cancel()
                    return
                await anyio.sleep(every)

        tg.start_soon(play_forever)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        tg.cancel_scope.cancel()
