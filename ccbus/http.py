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
    app: Any, sock: socket.socket, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    stopped = anyio.Event()
    task_status.started()
    try:
        await hypercorn_serve(app, config, shutdown_trigger=stopped.wait)
    finally:
        sock.close()
