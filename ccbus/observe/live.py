"""The live view's feed: what the bus does, fanned out to browsers as Server-Sent Events.

The bus publishes small JSON-ready records (``event``, ``rule``, ``source``,
``dead_letter``) to a :class:`LiveFeed`; each open page is one subscriber
with a bounded queue.  A browser that cannot keep up loses records (counted
in ``ccbus_live_dropped_total``) rather than slowing the bus: the view is
for watching, the outbox is for delivery.  The feed also keeps the last
few hundred records, so a page opened now shows what just happened.

SSE rather than WebSocket: one-way is all the page needs, ``EventSource``
reconnects by itself, and it is plain HTTP through the same listener.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

__all__ = ["LiveFeed", "live_page", "live_stream"]

#: ``(kind, payload)``; the payload may be a zero-argument callable that builds it, so
#: that the bus pays for turning events into JSON only while someone is watching.
Record = tuple[str, dict[str, Any] | Callable[[], dict[str, Any]]]

#: Records a page receives at once when it opens.  A record holds its event until it
#: leaves the backlog (it is built only when someone watches), so this many recent
#: events stay alive, and keeping more of them and freeing them late costs the event
#: path measurably (bench/README.md, "Tuning constants"); the page's tables show 200
#: rows each.
BACKLOG = 100
#: Records queued for one slow page before they are dropped for it.
QUEUE_SIZE = 2000
#: A comment line this often keeps proxies from closing an idle stream.
HEARTBEAT = 15.0


class LiveFeed:
    """Fan-out of bus records to live subscribers: bounded, lossy by design."""

    def __init__(self, backlog: int = BACKLOG, queue_size: int = QUEUE_SIZE) -> None:
        self.recent: deque[Record] = deque(maxlen=backlog)
        self.queue_size = queue_size
        self.dropped = 0
        self._subscribers: set[MemoryObjectSendStream[Record]] = set()
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, payload: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        record: Record = (kind, payload)
        self.recent.append(record)
        if not self._subscribers:  # nobody watching: the usual case, on every event
            return
        for send in tuple(self._subscribers):
            try:
                send.send_nowait(record)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(send)

    @contextmanager
    def subscribe(self) -> Iterator[tuple[list[Record], MemoryObjectReceiveStream[Record]]]:
        """The backlog now and a stream of every new record, until the feed closes."""
        send, receive = anyio.create_memory_object_stream[Record](self.queue_size)
        backlog = list(self.recent)
        if self.closed:
            send.close()
        else:
            self._subscribers.add(send)
        try:
            with receive:
                yield backlog, receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def close(self) -> None:
        """End every subscription (the listener is stopping)."""
        self.closed = True
        for send in tuple(self._subscribers):
            send.close()
        self._subscribers.clear()


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
            with feed.subscribe() as (backlog, receive):
                yield _sse("snapshot", first)
                for kind, payload in backlog:
                    yield _sse(kind, redact(_built(payload)))
                yield _sse("live", {})
                while True:
                    record: Record | None = None
                    with anyio.move_on_after(HEARTBEAT):
                        try:
                            record = await receive.receive()
                        except anyio.EndOfStream:
                            return
                    if record is None:
                        yield ": heartbeat\n\n"
                    else:
                        yield _sse(record[0], redact(_built(record[1])))

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
