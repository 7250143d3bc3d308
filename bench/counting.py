"""The ``bench.count`` action the benchmarks' rules call (``python bench/<name>.py`` puts
this folder on ``sys.path``, so a benchmark imports it as ``counting``)."""

from __future__ import annotations

import time
from typing import Any

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
