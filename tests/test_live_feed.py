"""The live feed: backlog for new pages, bounded queues, drops counted, close ends streams."""

from __future__ import annotations

import pytest

from ccbus.observe.live import LiveFeed

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_slow_page_loses_records_counted_and_close_ends_its_stream() -> None:
    feed = LiveFeed(backlog=3, queue_size=2)
    for n in range(5):
        feed.publish("event", {"n": n})
    with feed.subscribe() as (backlog, receive):
        assert [payload["n"] for _, payload in backlog] == [2, 3, 4]  # type: ignore[index]
        assert feed.subscribers == 1
        for n in range(5, 10):
            feed.publish("event", lambda n=n: {"n": n})
        assert feed.dropped == 3
        kind, payload = await receive.receive()
        assert kind == "event" and callable(payload) and payload() == {"n": 5}
        feed.close()
        assert [r async for r in receive][0][1]() == {"n": 6}  # type: ignore[operator]
    assert feed.subscribers == 0
    with feed.subscribe() as (_, receive):  # after close: ends at once
        assert [r async for r in receive] == []
