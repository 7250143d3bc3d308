"""The local HTTP listener: health, metrics, traces, the live view, and sources' routes.

::

    GET /healthz           alive (the loop answers)            ccbus.observe.health
    GET /readyz            every source ready or degraded      ccbus.observe.health
    GET /health            everything at once (ccbus status)   ccbus.observe.health
    GET /metrics           Prometheus text format              ccbus.observe.metrics
    GET /traces[/RULE]     each rule's last runs               ccbus.observe.traces
    GET /live              the live view page                  ccbus.observe.live
    GET /live/stream       its Server-Sent Events              ccbus.observe.live
    GET /dead-letters      the newest dead letters             ccbus.observe.admin
    POST /dead-letters/retry, /dead-letters/purge              ccbus.observe.admin
    POST <source routes>   inbound webhooks etc.               sources' add_route

Starlette routes, served by Hypercorn on a socket the bus has already
bound, so a port clash is reported clearly at start-up and tests can bind
port 0.  Hypercorn runs as an ordinary task and leaves signals to the bus.
It is loopback by default: nothing here asks for credentials to read, so
put it behind a proxy that does before exposing it.  The two routes that
change state (the console's retry and purge) are guarded on their own: same
origin, JSON, and ``http.admin_token`` (required off loopback).  Secrets are
redacted from everything it serves, and every response is counted by status.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ccbus.errors import NotLeading
from ccbus.observe.admin import AdminPolicy, admin_routes
from ccbus.observe.health import readiness, status_document
from ccbus.observe.live import live_page, live_stream
from ccbus.observe.logs import LogEvery
from ccbus.observe.metrics import CONTENT_TYPE, families, render

if TYPE_CHECKING:
    from ccbus.observe.view import BusView, CounterView, DeadLetterDesk

__all__ = ["ProtocolErrors", "build_app", "serve_asgi"]

log = logging.getLogger("ccbus.listener")


#: Why a request was refused before it reached a route, for the log.
_PROTOCOL_ERRORS = {
    400: "not valid HTTP/1.1 (a malformed request line or header, or conflicting "
         "Content-Length headers)",
    431: "request headers too large (too many or too long)",
}

#: Bytes of a connection's kernel send buffer (Linux doubles it for its bookkeeping).
SEND_BUFFER = 32 * 1024


class CountResponses:
    """ASGI middleware: ``http_responses{status}`` for every answer the listener gives,
    and a 400 for a request of the shape used to smuggle requests past a proxy.

    A request with both ``Content-Length`` and ``Transfer-Encoding``, or more than
    one ``Content-Length``, is framed differently by different servers: a proxy
    in front could read one request where this listener reads two.  HTTP/1.1
    lets a server refuse it (RFC 9112, 6.3), so it is refused, counted as
    ``http_refused_requests{reason="ambiguous_length"}`` and logged (once a
    minute), and the connection closed.
    """

    def __init__(self, app: Any, counters: CounterView) -> None:
        self.app = app
        self.counters = counters
        self._log_every = LogEvery(60.0)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.counters.inc("http_responses", status=str(message["status"]))
            await send(message)

        lengths = sum(1 for name, _ in scope["headers"] if name.lower() == b"content-length")
        chunked = any(name.lower() == b"transfer-encoding" for name, _ in scope["headers"])
        if lengths > 1 or (lengths and chunked):
            self.counters.inc("http_refused_requests", reason="ambiguous_length")
            if self._log_every.due("ambiguous_length") is not None:
                client = scope.get("client") or ("?", 0)
                log.warning("listener: refused a request from %s with 400: both Content-Length "
                            "and Transfer-Encoding, or several Content-Length headers "
                            "(counted in ccbus_http_refused_requests_total; logged at most "
                            "once a minute)", client[0])
            answer = JSONResponse(
                {"error": "ambiguous body length: both Content-Length and Transfer-Encoding, "
                          "or several Content-Length headers"},
                status_code=400, headers={"Connection": "close"})
            await answer(scope, receive, counting_send)
            return
        await self.app(scope, receive, counting_send)


class ProtocolErrors:
    """Counts (and logs, once a minute per status) the requests the HTTP server
    itself refuses before any route sees them: malformed requests (400) and
    headers over the size limit (431).  See :func:`_count_protocol_errors`."""

    def __init__(self, counters: CounterView) -> None:
        self.counters = counters
        self._log_every = LogEvery(60.0)

    def __call__(self, status: int) -> None:
        self.counters.inc("http_responses", status=str(status))
        self.counters.inc("http_refused_requests", reason=f"protocol_{status}")
        if self._log_every.due(status) is not None:
            log.warning("listener: refused a request with %d: %s (counted in "
                        "ccbus_http_refused_requests_total; logged at most once a minute)",
                        status, _PROTOCOL_ERRORS.get(status, "not valid HTTP"))


def build_app(
    bus: BusView,
    routes: Iterable[Route] = (),
    *,
    desk: DeadLetterDesk | None = None,
    policy: AdminPolicy | None = None,
) -> Starlette:
    """The listener's routes over ``bus``, plus ``routes`` (sources' inbound endpoints),
    plus the console's dead-letter routes over ``desk`` (guarded by ``policy``)."""
    redact = bus.redactor.value
    policy = policy or AdminPolicy()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> JSONResponse:
        ready, doc = readiness(bus)
        return JSONResponse(redact(doc), status_code=200 if ready else 503)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(redact(status_document(bus, *await bus.outbox_counts())))

    async def metrics(request: Request) -> Response:
        text = bus.redactor.text(render(families(bus, *await bus.outbox_counts())))
        return Response(text, media_type=None, headers={"Content-Type": CONTENT_TYPE})

    async def traces(request: Request) -> JSONResponse:
        names = sorted(set(bus.rule_names()) | set(bus.traces.rules()))
        return JSONResponse(redact({"limit": bus.traces.limit, "rules": names}))

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
                "dead_letters": dead_letters,
                "admin": policy.describe() if desk is not None else {"enabled": False,
                                                                      "token_required": False}}

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
    if desk is not None:
        own += admin_routes(desk, policy, redact)

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
    on_protocol_error: Callable[[int], None] | None = None,
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

    # Accepted connections inherit the listener's send buffer.  Left to the kernel it
    # grows to megabytes per connection, which a client that never reads (a stalled
    # live view) pins for as long as it stays connected; bounded, such a client stops
    # taking records soon and the live feed drops them for it instead.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    # the idle timer: a connection with no request in progress (nothing sent yet, or a
    # request line still incomplete) is closed after this.  Not hypercorn's read_timeout:
    # it would also cut off live-view streams and requests waiting on back-pressure.
    config.keep_alive_timeout = client_timeout
    if on_protocol_error is not None:
        _count_protocol_errors()
        config.ccbus_on_protocol_error = on_protocol_error  # type: ignore[attr-defined]
    task_status.started()
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)


_patched = False


def _count_protocol_errors() -> None:
    """Let each server's ``Config`` hear the error responses Hypercorn sends itself.

    Hypercorn answers a request h11 cannot parse (400, 431) without calling the
    app, so no middleware sees it, and it has no hook for it: its HTTP/1.1
    protocol's one method that sends them is wrapped, once per process, to call
    the ``ccbus_on_protocol_error`` of the server's own config (several servers
    in one process each count their own).
    """
    global _patched
    if _patched:
        return
    from hypercorn.protocol.h11 import H11Protocol

    original = H11Protocol._send_error_response

    async def send_error_response(self: Any, status_code: int) -> None:
        hear = getattr(self.config, "ccbus_on_protocol_error", None)
        if hear is not None:
            hear(status_code)
        await original(self, status_code)

    H11Protocol._send_error_response = send_error_response  # type: ignore[method-assign]
    _patched = True
