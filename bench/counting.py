"""The ``bench.count`` action the benchmarks' rules call (``python bench/<name>.py`` puts
this folder on ``sys.path``, so a benchmark imports it as ``counting``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import anyio

from ccbus import ActionSpec, Options, hookimpl


class Counting:
    """A plugin with the ``bench.count`` action: counts calls and notes when the last one ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.last = 0.0

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        counter = self

        class Params(Options):
            agent: str

        async def run(params: Params, ctx: Any) -> None:
            counter.calls += 1
            counter.last = time.perf_counter()

        return [ActionSpec(name="bench.count", params=Params, run=run, side_effects=False)]


async def publish_all(bus: Any, events: Iterable[Any], counting: Counting, calls: int) -> float:
    """Run ``bus``, publish ``events`` once it has started, and wait until ``bench.count``
    has run ``calls`` times: calls per second from the first publish to the last call."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        started = time.perf_counter()
        for event in events:
            await bus.publish(event)
        with anyio.fail_after(600):
            while counting.calls < calls:  # noqa: ASYNC110 - polling the action's counter
                await anyio.sleep(0.001)
        bus.stop()
    return calls / (counting.last - started)
