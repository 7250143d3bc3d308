"""Built-in source ``replay``: events from JSON Lines files, as fast as possible or paced.

::

    sources:
      yesterday:
        plugin: replay
        options:
          path: recordings/*.jsonl   # relative to the config file
          speed: 10                  # 10x real time, by the events' own times; 0 = no pauses
          max_pause: 5s              # optional: cap each pause (a night's gap in a recording)

Each line is a CloudEvents-like object; only ``type`` is required (see
``ccbus/cli/demo/events/`` for examples).  A malformed line is logged with file
and line, counted in ``bad_lines`` and in ``/metrics``
(``ccbus_source_bad_input_total{reason="bad_line"}``), and skipped.  When every file has been
read the source finishes (``ccbus replay`` then exits; ``ccbus run`` keeps
the other sources going), unless ``loop: true``.
"""

from __future__ import annotations

import glob
from datetime import timedelta
from pathlib import Path

import anyio
from pydantic import Field

from ccbus.config.schema import Duration, Options
from ccbus.events.files import BadLine, read_events
from ccbus.hookspecs import hookimpl
from ccbus.sources.api import SourceContext, SourceSpec


class ReplayOptions(Options):
    path: str | list[str]
    speed: float = Field(default=0.0, ge=0)
    #: The longest pause between two events when pacing; ``None`` keeps every
    #: gap as recorded (``speed: 1`` is then real time).  ``ccbus demo`` sets
    #: it so that a gap of hours in a recording does not stall the demo.
    max_pause: Duration | None = Field(default=None, gt=0)
    loop: bool = False


class ReplaySource:
    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.options: ReplayOptions = ctx.options
        self.bad_lines = 0
        self.replayed = 0

    def files(self) -> list[Path]:
        patterns = [self.options.path] if isinstance(self.options.path, str) else self.options.path
        base = self.ctx.config_dir
        found: list[Path] = []
        for pattern in patterns:
            full = pattern if Path(pattern).is_absolute() else str(base / pattern)
            matches = sorted(glob.glob(full))
            if not matches:
                self.ctx.log.warning("replay %s: no file matches %s", self.ctx.name, full)
            found.extend(Path(m) for m in matches)
        return found

    async def run(self) -> None:
        self.ctx.set_state("replaying")
        while True:
            for path in self.files():
                await self.replay_file(path)
            if not self.options.loop:
                break
        self.ctx.set_state("finished")
        self.ctx.log.info(
            "replay %s: finished: %d events, %d bad lines",
            self.ctx.name,
            self.replayed,
            self.bad_lines,
        )

    def pause(self, gap: timedelta) -> float:
        """Seconds to wait for a recorded ``gap`` at this speed: never negative, capped if asked."""
        seconds = max(gap.total_seconds() / self.options.speed, 0.0)
        cap = self.options.max_pause
        return seconds if cap is None else min(seconds, cap)

    async def replay_file(self, path: Path) -> None:
        previous = None
        for item in read_events(path, source=self.ctx.name):
            if isinstance(item, BadLine):
                self.bad_lines += 1
                self.ctx.count_bad_input("bad_line")  # ccbus_source_bad_input_total
                self.ctx.log.warning("replay %s: %s (skipped)", self.ctx.name, item)
                continue
            if self.options.speed > 0 and previous is not None:
                await anyio.sleep(self.pause(item.time - previous))
            previous = item.time
            await self.ctx.emit(item)
            self.replayed += 1


@hookimpl
def register_sources() -> list[SourceSpec]:
    return [
        SourceSpec(
            name="replay",
            options=ReplayOptions,
            factory=ReplaySource,
            description="Replay events from JSON Lines files.",
        )
    ]
