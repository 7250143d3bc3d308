"""The live view's feed: what the bus does, fanned out to browsers as Server-Sent Events.

The bus publishes small JSON-ready records (``event``, ``rule``, ``source``,
``dead_letter``) to a :class:`LiveFeed`; each open page is one
:class:`Subscription`.  The view is for watching, the outbox is for
delivery, so a page that cannot keep up loses records rather than slowing
the bus:

* publishing costs the same however many pages are open: a record is
  appended once to one bounded ring, and pages read it from there at their
  own pace (one cursor each), where a queue per page made every record cost
  a send per page and a wake-up of every page's task;
* a page that falls more than ``queue_size`` records behind (a client that
  stopped reading, its socket full) loses the oldest; they are counted in
  ``ccbus_live_dropped_total``, also while the page is still behind;
* a page is woken at most every :data:`PACE` seconds and then writes what
  has arrived as one chunk, so three hundred pages cost three hundred small
  writes a few times a second, not three hundred per event;
* each record is built, redacted and turned into SSE text once, by the first
  page that sends it, whatever the number of pages.

The feed also keeps the last few records, so a page opened now shows what
just happened.

SSE rather than WebSocket: one-way is all the page needs, ``EventSource``
reconnects by itself, and it is plain HTTP through the same listener.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

__all__ = ["LiveFeed", "Subscription", "live_page", "live_stream"]

#: ``(kind, payload)``; the payload may be a zero-argument callable that builds it, so
#: that the bus pays for turning events into JSON only while someone is watching.
Record = tuple[str, dict[str, Any] | Callable[[], dict[str, Any]]]

#: Records a page receives at once when it opens.  A record holds its event until it
#: leaves the backlog (it is built only when someone watches), so this many recent
#: events stay alive, and keeping more of them and freeing them late costs the event
#: path measurably (bench/README.md, "Tuning constants"); the page's tables show 200
#: rows each.
BACKLOG = 100
#: Records a page may fall behind before the oldest are dropped for it.  The ring
#: that holds them exists only while a page is open.
QUEUE_SIZE = 500
#: A comment line this often keeps proxies from closing an idle stream.
HEARTBEAT = 15.0
#: Seconds a page waits after each chunk it sends: what arrived meanwhile goes out
#: as the next chunk, so a page costs a few wake-ups a second, not one per record.
PACE = 0.2


class _Entry:
    """A record in the ring, and its SSE text once a page has needed it."""

    __slots__ = ("kind", "payload", "text")

    def __init__(self, kind: str, payload: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        self.kind = kind
        self.payload = payload
        self.text: str | None = None

    def sse(self, redact: Callable[[Any], Any]) -> str:
        if self.text is None:
            self.text = _sse(self.kind, redact(_built(self.payload)))
            self.payload = {}  # built: the event it came from may go
        return self.text


class LiveFeed:
    """Fan-out of bus records to live subscribers: bounded, lossy by design."""

    def __init__(self, backlog: int = BACKLOG, queue_size: int = QUEUE_SIZE) -> None:
        self.recent: deque[Record] = deque(maxlen=backlog)
        self.queue_size = queue_size
        self.closed = False
        self._ring: deque[_Entry] = deque()
        self._next = 0  # the sequence number the next record gets
        self._dropped = 0  # records pages had lost when they last caught up
        self._subscriptions: set[Subscription] = set()
        self._changed: anyio.Event | None = None  # set when a record arrives; made by waiters

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    @property
    def dropped(self) -> int:
        """Records pages lost, including those a page that is still behind has lost so far."""
        first = self._next - len(self._ring)
        return self._dropped + sum(max(0, first - s.cursor) for s in self._subscriptions)

    def publish(self, kind: str, payload: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        """Keep a record for new pages and the open ones; never waits, whatever they do."""
        self.recent.append((kind, payload))
        if not self._subscriptions:  # nobody watching: the usual case, on every event
            return
        ring = self._ring
        ring.append(_Entry(kind, payload))
        self._next += 1
        if len(ring) > self.queue_size:
            ring.popleft()
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    @contextmanager
    def subscribe(self) -> Iterator[tuple[list[Record], Subscription]]:
        """The backlog now and a subscription to every new record, until the feed closes."""
        subscription = Subscription(self, self._next)
        backlog = list(self.recent)
        if not self.closed:
            self._subscriptions.add(subscription)
        try:
            yield backlog, subscription
        finally:
            self._leave(subscription)

    def _leave(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            first = self._next - len(self._ring)
            self._dropped += max(0, first - subscription.cursor)
            self._subscriptions.discard(subscription)
        if not self._subscriptions:
            self._ring.clear()  # the records (and their events) go with the last page

    def _take(self, subscription: Subscription) -> list[_Entry]:
        """The records ``subscription`` has not had yet, counting those it lost."""
        first = self._next - len(self._ring)
        if subscription.cursor < first:
            self._dropped += first - subscription.cursor
            subscription.cursor = first
        taken = list(itertools.islice(self._ring, subscription.cursor - first, None))
        subscription.cursor = self._next
        return taken

    def _waiter(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def close(self) -> None:
        """End every subscription (the listener is stopping)."""
        self.closed = True
        for subscription in tuple(self._subscriptions):
            self._leave(subscription)
        if self._changed is not None:
            self._changed.set()


class Subscription:
    """One page's place in the feed: the sequence number of the next record it gets."""

    __slots__ = ("cursor", "feed")

    def __init__(self, feed: LiveFeed, cursor: int) -> None:
        self.feed = feed
        self.cursor = cursor

    @property
    def ended(self) -> bool:
        return self not in self.feed._subscriptions

    async def next(self, heartbeat: float = HEARTBEAT) -> list[_Entry] | None:
        """The records that arrived since the last call, waiting up to ``heartbeat`` for one.

        ``[]`` when none came in time, None when the feed closed.
        """
        while True:
            if self.ended:
                return None
            taken = self.feed._take(self)
            if taken:
                return taken
            changed = self.feed._waiter()
            with anyio.move_on_after(heartbeat) as waiting:
                await changed.wait()
            if waiting.cancelled_caught:
                return [] if not self.ended else None


def _sse(kind: str, payload: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(payload, default=str)}\n\n"


def _built(payload: dict[str, Any] | Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return payload() if callable(payload) else payload


def live_stream(
    feed: LiveFeed,
    snapshot: Callable[[], Awaitable[dict[str, Any]]],
    redact: Callable[[Any], Any],
) -> Callable[[Request], Any]:
    """``GET /live/stream``: a ``snapshot`` record, the backlog, a ``live`` marker, then
    live records (the page counts dead letters from the snapshot plus live ones only)."""

    async def endpoint(request: Request) -> Response:
        async def body() -> AsyncIterator[str]:
            yield ": ccbus live view\nretry: 2000\n\n"
            first = redact(await snapshot())
            with feed.subscribe() as (backlog, subscription):
                yield _sse("snapshot", first)
                for kind, payload in backlog:
                    yield _sse(kind, redact(_built(payload)))
                yield _sse("live", {})
                while True:
                    entries = await subscription.next(HEARTBEAT)
                    if entries is None:
                        return
                    if not entries:
                        yield ": heartbeat\n\n"
                        continue
                    yield "".join(entry.sse(redact) for entry in entries)
                    await anyio.sleep(PACE)

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return endpoint


async def live_page(request: Request) -> HTMLResponse:
    """``GET /live``: one static HTML file with its script inline; no build step."""
    page = files("ccbus.observe").joinpath("static/live.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})
