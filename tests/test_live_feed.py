"""The live feed: backlog for new pages, one bounded ring, drops counted, close ends streams."""

from __future__ import annotations

import pytest

from ccbus.observe.live import LiveFeed

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def texts(entries: list | None) -> list[str]:  # type: ignore[type-arg]
    assert entries is not None
    return [entry.sse(lambda value: value) for entry in entries]


async def test_a_slow_page_loses_records_counted_and_close_ends_its_stream() -> None:
    feed = LiveFeed(backlog=3, queue_size=2)
    for n in range(5):
        feed.publish("event", {"n": n})
    with feed.subscribe() as (backlog, subscription):
        assert [payload["n"] for _, payload in backlog] == [2, 3, 4]  # type: ignore[index]
        assert feed.subscribers == 1
        for n in range(5, 10):
            feed.publish("event", lambda n=n: {"n": n})
        assert feed.dropped == 3  # counted while the page is still behind
        assert texts(await subscription.next()) == [
            'event: event\ndata: {"n": 8}\n\n', 'event: event\ndata: {"n": 9}\n\n']
        assert feed.dropped == 3
        feed.publish("event", {"n": 10})
        feed.close()
        assert await subscription.next() is None
    assert feed.subscribers == 0
    with feed.subscribe() as (_, subscription):  # after close: ends at once
        assert await subscription.next() is None


async def test_a_record_is_built_once_for_every_page() -> None:
    feed = LiveFeed()
    builds: list[int] = []
    with feed.subscribe() as (_, first), feed.subscribe() as (_, second):
        feed.publish("event", lambda: builds.append(1) or {"n": 1})  # type: ignore[func-returns-value]
        one, two = texts(await first.next()), texts(await second.next())
    assert one == two == ['event: event\ndata: {"n": 1}\n\n'] and builds == [1]


async def test_nobody_watching_keeps_only_the_backlog() -> None:
    feed = LiveFeed(backlog=2)
    with feed.subscribe():
        feed.publish("event", {"n": 0})
    for n in range(1, 100):
        feed.publish("event", {"n": n})
    assert len(feed._ring) == 0 and len(feed.recent) == 2 and feed.dropped == 0
