"""The control endpoint of a vendor simulator: ``GET /_sim/status`` and ``POST /_sim/<action>``.

A plugin's simulator (``ccbus simulate <plugin>``) is the peer its tests, its
demo and its benchmark talk to; faults are injected into a running one over
HTTP, by ``ccbus simulate <plugin> inject ...`` or by any HTTP client.  Every
simulator answers the same way, so this module writes the endpoint once::

    from ccbus import simulator_control_routes

    routes = [..., *simulator_control_routes({"drop": drop, "blast": blast}, status)]

``POST /_sim/<action>`` takes a JSON object (an empty body is ``{}``) and calls
the action with it; the action returns a JSON object (or an awaitable of one),
answered as ``{"ok": true, **result}``.  The other answers are all
``{"error": "..."}``: 400 for a body that is not a JSON object, 404 for an
unknown action (with did-you-mean, and ``known``: every action's name), 400 when
the action raises ``ValueError``, ``KeyError`` or ``TypeError`` (a parameter
missing or of the wrong kind).  ``GET /_sim/status`` answers what ``status()``
returns.

:func:`simulator_control` is the client side, what an ``inject`` command calls.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ccbus.config.suggest import unknown_message
from ccbus.events.jsondecode import decode_json

__all__ = [
    "CONTROL_PREFIX", "SimulatorAction", "simulator_command", "simulator_control",
    "simulator_control_routes",
]

#: Where the control endpoint lives on a simulator's HTTP port.
CONTROL_PREFIX = "/_sim"

#: A control action: the request's JSON object in, a JSON object (or an awaitable of one) out.
SimulatorAction = Callable[
    [dict[str, Any]], Awaitable[Mapping[str, Any]] | Mapping[str, Any]
]


def simulator_control_routes(
    actions: Mapping[str, SimulatorAction],
    status: Callable[[], Mapping[str, Any]],
    *,
    prefix: str = CONTROL_PREFIX,
) -> list[Route]:
    """The routes ``GET <prefix>/status`` (``status()``) and ``POST <prefix>/<action>``.

    ``actions`` is read at each request, so a simulator may add to it later.
    """

    async def show_status(request: Request) -> JSONResponse:
        return JSONResponse(dict(status()))

    async def control(request: Request) -> JSONResponse:
        action = request.path_params["action"]
        try:
            raw = await request.body()
            params: Any = decode_json(raw) if raw.strip() else {}
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if not isinstance(params, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        handler = actions.get(action)
        if handler is None:
            known = sorted(actions)
            return JSONResponse(
                {"error": unknown_message("action", action, known), "known": known},
                status_code=404,
            )
        try:
            outcome = handler(params)
            result = await outcome if inspect.isawaitable(outcome) else outcome
        except (ValueError, KeyError, TypeError) as err:
            return JSONResponse({"error": f"{type(err).__name__}: {err}"}, status_code=400)
        return JSONResponse({"ok": True, **result})

    return [
        Route(f"{prefix}/status", show_status, methods=["GET"]),
        Route(f"{prefix}/{{action}}", control, methods=["POST"]),
    ]


def simulator_control(
    url: str,
    action: str,
    params: Mapping[str, Any] | None = None,
    *,
    timeout: float = 120.0,
    prefix: str = CONTROL_PREFIX,
) -> tuple[int, Any]:
    """Call a running simulator at ``url``: ``(HTTP status, decoded JSON answer)``.

    ``action`` ``"status"`` is ``GET <prefix>/status``; any other is ``POST
    <prefix>/<action>`` with ``params`` as the JSON body.  Proxy settings from the
    environment are ignored (the simulator is local).  An answer that is not
    JSON is returned as ``{"error": <its text>}``; a simulator that cannot be
    reached raises :class:`OSError`.
    """
    import urllib.error  # only the CLI calls this: `import ccbus` stays light
    import urllib.request

    base = url.rstrip("/")
    if action == "status":
        request = urllib.request.Request(f"{base}{prefix}/status", method="GET")
    else:
        request = urllib.request.Request(
            f"{base}{prefix}/{action}",
            data=json.dumps(dict(params or {})).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            code, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        code, body = err.code, err.read()
    try:
        return code, decode_json(body)
    except ValueError:
        return code, {"error": body.decode(errors="replace").strip() or f"HTTP {code}"}


def simulator_command(url: str, action: str, params: Mapping[str, Any] | None = None) -> None:
    """What a plugin's ``inject`` command does with :func:`simulator_control`: print the
    simulator's JSON answer, exit 1 when it refused, and say plainly when it is not there."""
    import sys

    import click

    try:
        code, answer = simulator_control(url, action, params)
    except OSError as err:
        raise click.ClickException(f"cannot reach the simulator at {url}: {err}") from None
    click.echo(json.dumps(answer, indent=2))
    if code >= 400:
        sys.exit(1)
