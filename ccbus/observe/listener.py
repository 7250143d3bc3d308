"""The local HTTP listener: health, metrics, traces, the live view, and sources' routes.

::

    GET /healthz           alive (the loop answers)            ccbus.observe.health
    GET /readyz            every source ready or degraded      ccbus.observe.health
    GET /health            everything at once (ccbus status)   ccbus.observe.health
    GET /metrics           Prometheus text format              ccbus.observe.metrics
    GET /traces[/RULE]     each rule's last runs               ccbus.observe.traces
    GET /live              the live view page                  ccbus.observe.live
    GET /live/stream       its Server-Sent Events              ccbus.observe.live
    POST <source routes>   inbound webhooks etc.               sources' add_route

Starlette routes, served by Hypercorn on a socket the bus has already
bound, so a port clash is reported clearly at start-up and tests can bind
port 0.  Hypercorn runs as an ordinary task and leaves signals to the bus.
It is loopback by default: nothing here asks for credentials, so put it
behind a proxy that does before exposing it.  Secrets are redacted from
everything it serves, and every response is counted by status.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ccbus.errors import NotLeading
from ccbus.observe.health import readiness, status_document
from ccbus.observe.live import live_page, live_stream
from ccbus.observe.metrics import CONTENT_TYPE, families, render

if TYPE_CHECKING:
    from ccbus.observe.view import BusView, CounterView

__all__ = ["build_app", "serve_asgi"]


class CountResponses:
    """ASGI middleware: ``http_responses{status}`` for every answer the listener gives."""

    def __init__(self, app: Any, counters: CounterView) -> None:
        self.app = app
        self.counters = counters

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.counters.inc("http_responses", status=str(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)


def build_app(bus: BusView, routes: Iterable[Route] = ()) -> Starlette:
    """The listener's routes over ``bus``, plus ``routes`` (sources' inbound endpoints)."""
    redact = bus.redactor.value

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> JSONResponse:
        ready, doc = readiness(bus)
        return JSONResponse(redact(doc), status_code=200 if ready else 503)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(redact(status_document(bus, *await bus.outbox_counts())))

    async def metrics(request: Request) -> Response:
        text = render(families(bus, *await bus.outbox_counts()))
        return Response(text, media_type=None, headers={"Content-Type": CONTENT_TYPE})

    async def traces(request: Request) -> JSONResponse:
        names = sorted(set(bus.rule_names()) | set(bus.traces.rules()))
        return JSONResponse({"limit": bus.traces.limit, "rules": names})

    async def rule_traces(request: Request) -> JSONResponse:
        rule = request.path_params["rule"]
        runs = bus.traces.runs(rule)
        if runs is None:
            if rule not in bus.rule_names():
                return JSONResponse({"error": f"no rule named {rule!r}"}, status_code=404)
            runs = []
        return JSONResponse(redact({"rule": rule, "limit": bus.traces.limit, "runs": runs}))

    async def snapshot() -> dict[str, Any]:
        _, doc = readiness(bus)
        _, dead_letters = await bus.outbox_counts()
        return {"sources": doc["sources"], "status": doc["status"],
                "rules": bus.rule_names(),
                "dead_letters": dead_letters}

    own = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/traces", traces, methods=["GET"]),
        Route("/traces/{rule:path}", rule_traces, methods=["GET"]),
        Route("/live", live_page, methods=["GET"]),
        Route("/live/stream", live_stream(bus.live, snapshot, redact), methods=["GET"]),
    ]
    async def standby(request: Request, exc: Exception) -> Response:
        """A group member that stands by refuses events: the sender retries the leader."""
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    return Starlette(routes=[*own, *routes], middleware=[Middleware(CountResponses, bus.counters)],
                     exception_handlers={NotLeading: standby})


async def serve_asgi(
    app: Any,
    sock: socket.socket,
    stop: anyio.Event,
    *,
    client_timeout: float = 10.0,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the bound, listening ``sock`` until ``stop`` is set.

    Hypercorn takes the socket over (and closes it); stopping through its
    shutdown trigger lets requests in flight finish, where cancelling it
    would cut them off.  A client that sends nothing for ``client_timeout``
    (a half-sent request line, an idle connection) is disconnected, so slow
    clients cannot hold connections open for ever.
    """
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    # the idle timer: a connection with no request in progress (nothing sent yet, or a
    # request line still incomplete) is closed after this.  Not hypercorn's read_timeout:
    # it would also cut off live-view streams and requests waiting on back-pressure.
    config.keep_alive_timeout = client_timeout
    task_status.started()
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)
