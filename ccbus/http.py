"""The local HTTP listener: sources' routes (inbound webhooks) and ``/health``.

Starlette routes, served by Hypercorn on a socket the bus has already
bound, so a port clash is reported clearly at start-up and tests can bind
port 0.  Hypercorn runs as an ordinary task and leaves signals to the bus.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from .bus import Bus

__all__ = ["build_app", "serve"]


def build_app(bus: Bus) -> Starlette:
    async def health(request: Request) -> JSONResponse:
        return JSONResponse(bus.health())

    routes = [Route("/health", health, methods=["GET"])]
    for runtime in bus.sources.values():
        for path, methods, handler in runtime.context.routes:
            routes.append(Route(path, handler, methods=methods))
    return Starlette(routes=routes)


async def serve(
    app: Any,
    sock: socket.socket,
    stop: anyio.Event,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the bound, listening ``sock`` until ``stop`` is set.

    Hypercorn takes the socket over (and closes it); stopping through its
    shutdown trigger lets requests in flight finish, where cancelling it
    would cut them off.
    """
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    task_status.started()
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)
