"""``ccbus simulate cucm``: a CUCM Connector emulator on an ActiveMQ broker.

::

    ccbus simulate cucm                                # stomp://127.0.0.1:61613, Connector1
    ccbus simulate cucm --broker stomp://amq:61613 --pattern json --agents 1001-1010
    ccbus simulate cucm --ring-every 20s               # inbound calls to logged-in agents
    ccbus simulate cucm --outage-every 5m --outage-for 20s

It prints the ``sources:`` block for a ccbus config, then serves until
interrupted (or for ``--run-for``).  Agents log in with ``cucm.login``; the
emulator then rings them from random numbers when ``--ring-every`` is set.
"""

from __future__ import annotations

import random

import anyio
import click

from ccbus import click_duration

from .simulator import CucmEmulator, parse_agents

__all__ = ["simulate_cucm"]


@click.command(name="cucm")
@click.option("--broker", default="stomp://127.0.0.1:61613", show_default=True,
              help="ActiveMQ STOMP URL (stomp:// or stomp+ssl://).")
@click.option("--username", default=None, help="Broker user.")
@click.option("--password", default=None, envvar="CCBUS_CUCM_SIM_PASSWORD",
              help="Broker password (or $CCBUS_CUCM_SIM_PASSWORD).")
@click.option("--queue", "connector_queue", default="Connector1", show_default=True,
              help="The queue the connector consumes commands from.")
@click.option("--pattern", type=click.Choice(["default", "json"]), default="default",
              show_default=True, help="Event pattern: '#'-separated or JSON.")
@click.option("--agents", default="1001-1020", show_default=True,
              help="Extensions CUCM knows (others get USER_NOT_FOUND).")
@click.option("--ring-every", default=None, callback=click_duration,
              help="Offer an inbound call to a random logged-in agent this often.")
@click.option("--outage-every", default=None, callback=click_duration,
              help="Go OUT_OF_SERVICE this often (for --outage-for).")
@click.option("--outage-for", default="20s", callback=click_duration, show_default=True)
@click.option("--run-for", default=None, callback=click_duration,
              help="Stop after this long (default: until interrupted).")
def simulate_cucm(
    broker: str, username: str | None, password: str | None, connector_queue: str,
    pattern: str, agents: str, ring_every: float | None, outage_every: float | None,
    outage_for: float, run_for: float | None,
) -> None:
    """Emulate a CUCM Connector on an ActiveMQ broker's queue Connector1."""
    from ccbus_stomp import StompOptions

    try:
        options = StompOptions(url=broker, username=username, password=password,
                               backoff_initial=0.2, backoff_cap=5.0)
        directory = parse_agents(agents)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None

    async def main() -> None:
        emulator = CucmEmulator(options, connector_queue=connector_queue,
                                pattern=pattern,  # type: ignore[arg-type]
                                directory=directory)
        async with emulator:
            await emulator.wait_connected(60)
            click.echo(f"CUCM Connector emulator on queue {connector_queue} at "
                       f"{options.safe_url} ({pattern} pattern, {len(directory)} agents)")
            click.echo("sources:\n  cucm:\n    plugin: cucm\n    options:\n"
                       f"      broker: {{url: \"{broker}\"}}\n"
                       f"      connector_queue: {connector_queue}")
            async with anyio.create_task_group() as tg:
                if ring_every:
                    tg.start_soon(_ring, emulator, ring_every)
                if outage_every:
                    tg.start_soon(_outages, emulator, outage_every, outage_for)
                if run_for is not None:
                    await anyio.sleep(run_for)
                    tg.cancel_scope.cancel()
        click.echo(f"stopped: {dict(sorted(emulator.stats.items()))}")

    try:
        anyio.run(main)
    except KeyboardInterrupt:
        pass


async def _ring(emulator: CucmEmulator, every: float) -> None:
    rng = random.Random()  # noqa: S311 - test traffic
    while True:
        await anyio.sleep(every)
        idle = [a for a, s in emulator.agents.items() if not s.calls]
        if idle:
            agent = rng.choice(idle)
            caller = f"+4930{rng.randrange(10**6, 10**7)}"
            call = await emulator.ring(agent, caller)
            click.echo(f"ringing {agent} from {caller} (connection {call})")


async def _outages(emulator: CucmEmulator, every: float, length: float) -> None:
    while True:
        await anyio.sleep(every)
        click.echo("OUT_OF_SERVICE")
        await emulator.set_in_service(False)
        await anyio.sleep(length)
        click.echo("IN_SERVICE")
        await emulator.set_in_service(True)
