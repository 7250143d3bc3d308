"""One message can never stop a source: whatever its decoding or mapping raises, it is
refused (counted, logged, dead-lettered), acknowledged, and the source goes on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import write

from ccbus import Event, Options, RefusedInput, SourceContext, SourceSpec, decode_json, hookimpl
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


DEEP = b"[" * 100_000 + b"]" * 100_000


def mapping_bug(doc: dict[str, Any]) -> list[Event]:
    """A mapping that raises on one vendor payload (as a real bug would)."""
    return [Event(type="feed.item", source="feed", data={"n": 10 // doc["n"]})]


class Feed:
    """A source over a fixed list of messages that acknowledges each after handling it."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages
        self.acked: list[int] = []
        self.runs = 0

    @hookimpl
    def register_sources(self) -> list[SourceSpec]:
        feed = self

        class FeedSource:
            def __init__(self, ctx: SourceContext) -> None:
                self.ctx = ctx

            def convert(self, raw: bytes) -> list[Event]:
                try:
                    doc = decode_json(raw)
                except ValueError as err:
                    raise RefusedInput("invalid_json", str(err)) from None
                if not isinstance(doc, dict):
                    raise RefusedInput("not_an_object", f"a JSON {type(doc).__name__}")
                return mapping_bug(doc)

            async def run(self) -> None:
                feed.runs += 1
                for offset, raw in enumerate(feed.messages):
                    if offset in feed.acked:
                        continue
                    events = await self.ctx.convert(raw, lambda r=raw: self.convert(r),
                                                    offset=offset)
                    for event in events or ():
                        await self.ctx.emit(event)
                    feed.acked.append(offset)
                await anyio.sleep_forever()

        return [SourceSpec(name="feed", options=Options, factory=FeedSource)]


async def test_poison_messages_are_refused_acknowledged_and_the_source_goes_on(
    tmp_path: Path,
) -> None:
    messages = [
        b'{"n": 1}',
        DEEP,                      # RecursionError in a plain json.loads
        b'{"n": NaN}',             # not JSON (RFC 8259)
        b"[1, 2]",                 # the source's own refusal
        b'{"n": 0}',               # the mapping raises ZeroDivisionError
        b'"\\ud800"',              # a lone surrogate
        b"\xed\xa0\x80",           # not UTF-8
        b'{"n": 2}',
    ]
    feed = Feed(messages)
    (tmp_path / "rules").mkdir()
    config = write(tmp_path / "ccbus.yaml", f"""
        state_dir: {tmp_path / "state"}
        sources:
          feed: {{plugin: feed}}
    """)
    routed: list[Event] = []
    bus = Bus(load_config(config), PluginHost(autoload=False, extra=[feed]),
              observer=lambda event, firings, calls: routed.append(event))
    async with anyio.create_task_group() as tg:
        tg.start_soon(bus.run)
        with anyio.fail_after(20):
            while len(feed.acked) < len(messages):
                await anyio.sleep(0.01)
        bus.stop()

    assert feed.runs == 1, "a message stopped the source"
    assert feed.acked == list(range(len(messages)))
    assert [e.data["n"] for e in routed if e.type == "feed.item"] == [10, 5]
    counts = {labels["reason"]: value for name, labels, value in bus.counters.snapshot()
              if name == "source_bad_input" and labels["source"] == "feed"}
    assert counts == {"invalid_json": 4, "not_an_object": 1, "unreadable": 1}
    letters = bus.sources["feed"].context.refusals.dead_letters.read()
    assert [letter["offset"] for letter in letters] == [1, 2, 3, 4, 5, 6]
    assert all(letter["reason"] and letter["detail"] for letter in letters)
    assert "ZeroDivisionError" in letters[3]["detail"]
    assert json.dumps(letters)  # what ccbus stored, it can read and show
