"""``ccbus simulate genesys``: produce Voice Microservices records to Kafka.

::

    ccbus simulate genesys                        # starts a Kafka test broker on a free
                                                  # port; plays the contact-center scenario
                                                  # every 15 s
    ccbus simulate genesys --bootstrap kafka:9092 --prefix lab- --every 0
    ccbus simulate genesys send --bootstrap 127.0.0.1:9092 --topic callthread \\
        --key 't1:c1' --value 'not json'          # one record, e.g. a poison one

Without ``--bootstrap`` the command runs its own broker (a test peer, see
:mod:`ccbus_peers.kafka` in ``ccbus-peers``) and prints the ``sources:`` block that
points ccbus at it.
"""

from __future__ import annotations

import json
import signal
import sys

import anyio
import click

from ccbus import click_duration

from .catalogue import AGENT_STATE, CALL_THREAD, DEFAULT_TOPICS
from .scenarios import SCENARIOS, agent_flaps
from .simulator import GenesysSimulator

__all__ = ["simulate_genesys"]


@click.group(name="genesys", invoke_without_command=True)
@click.option("--bootstrap", default=None,
              help="host:port of a Kafka broker; without it a test broker is started.")
@click.option("--port", default=0, show_default=True,
              help="Port of the test broker (0 picks a free one).")
@click.option("--prefix", default="", help="Topic name prefix.")
@click.option("--scenario", type=click.Choice([*SCENARIOS, "none"]), default="contact-center",
              show_default=True, help="What to play.")
@click.option("--every", default="15s", callback=click_duration, show_default=True,
              help="Pause between runs of the scenario (0: play once).")
@click.option("--speed", default=1.0, show_default=True, help="2 plays twice as fast.")
@click.option("--blast", default=0, show_default=True,
              help="Also send this many agent Ready/NotReady records flat out, once.")
@click.pass_context
def simulate_genesys(
    ctx: click.Context, bootstrap: str | None, port: int, prefix: str, scenario: str,
    every: float, speed: float, blast: int,
) -> None:
    """Genesys Voice Microservices: agent-state and call-thread records to Kafka."""
    if ctx.invoked_subcommand is not None:
        return
    simulator = GenesysSimulator(bootstrap, topic_prefix=prefix, port=port)
    anyio.run(_serve, simulator, scenario, every, speed, blast)


async def _serve(
    simulator: GenesysSimulator, scenario: str, every: float, speed: float, blast: int
) -> None:
    async with simulator:
        where = "test broker (not Kafka)" if simulator.broker else "Kafka"
        click.echo(f"Genesys simulator producing to {where} at {simulator.bootstrap}")
        click.echo("\nUse it from a ccbus config:\n\nsources:\n  genesys-sim:\n"
                   "    plugin: genesys\n    options:")
        for key, value in simulator.source_options().items():
            click.echo(f"      {key}: {json.dumps(value)}")
        click.echo("\nCtrl-C stops it.")
        sys.stdout.flush()
        async with anyio.create_task_group() as tg:
            if blast:
                tg.start_soon(_blast, simulator, blast)
            if scenario != "none":
                tg.start_soon(_scenario_forever, simulator, scenario, every, speed)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()


async def _blast(simulator: GenesysSimulator, count: int) -> None:
    sent = await simulator.play(agent_flaps(count), speed=0)
    click.echo(f"blasted {sent} agent-state records")


async def _scenario_forever(
    simulator: GenesysSimulator, scenario: str, every: float, speed: float
) -> None:
    while True:
        sent = await simulator.play(SCENARIOS[scenario](), speed=speed)
        click.echo(f"played {scenario}: {sent} records")
        sys.stdout.flush()
        if every <= 0:
            return
        await anyio.sleep(every)


@simulate_genesys.command()
@click.option("--bootstrap", required=True, help="host:port of the broker.")
@click.option("--prefix", default="", help="Topic name prefix.")
@click.option("--topic", type=click.Choice([AGENT_STATE, CALL_THREAD]), required=True)
@click.option("--key", default=None, help="Record key, {tenant_id}:{id}.")
@click.option("--value", required=True,
              help="Record value, sent as is (JSON or not); '-' reads stdin.")
def send(bootstrap: str, prefix: str, topic: str, key: str | None, value: str) -> None:
    """Send one record as given: to try a payload, or a poison one."""
    raw = sys.stdin.buffer.read() if value == "-" else value.encode()

    async def main() -> None:
        async with GenesysSimulator(bootstrap, topic_prefix=prefix) as simulator:
            await simulator.send(topic, key, raw)
            await simulator.flush()

    anyio.run(main)
    click.echo(f"sent 1 record to {prefix}{DEFAULT_TOPICS[topic]}")
