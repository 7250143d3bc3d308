"""``ccbus.simulator_control_routes`` and ``ccbus.simulator_control`` over a real HTTP server.

The routes are served by :func:`ccbus.serve_asgi` on a loopback socket, as a
plugin's simulator serves them; requests go through httpx and through the
core's own client, the one ``ccbus simulate <plugin> inject`` commands use.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from starlette.applications import Starlette

from ccbus import serve_asgi, simulator_control, simulator_control_routes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Toy:
    """A simulator with a counter: one sync action, one async, one that refuses."""

    def __init__(self) -> None:
        self.dropped = 0
        self.published: list[dict[str, Any]] = []

    def drop(self, params: dict[str, Any]) -> dict[str, Any]:
        self.dropped += int(params.get("count", 1))
        return {"closed": self.dropped}

    async def publish(self, params: dict[str, Any]) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        event = params["event"]  # a KeyError when missing: a 400 naming it
        if not isinstance(event, str):
            raise TypeError("'event' must be a string")
        self.published.append(params)
        return {"delivered": len(self.published)}

    def status(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "published": len(self.published)}


@asynccontextmanager
async def serving(toy: Toy) -> AsyncIterator[str]:
    actions: dict[str, Callable[[dict[str, Any]], Any]] = {"drop": toy.drop,
                                                         "publish": toy.publish}
    app = Starlette(routes=simulator_control_routes(actions, toy.status))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(lambda task_status: serve_asgi(app, sock, stop, task_status=task_status))
        try:
            yield url
        finally:
            stop.set()


async def test_actions_sync_and_async_answer_ok_with_their_result() -> None:
    toy = Toy()
    async with serving(toy) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        dropped = await http.post("/_sim/drop", json={"count": 2})
        empty = await http.post("/_sim/drop")  # no body: {}
        published = await http.post("/_sim/publish", json={"event": "UserStatus"})
        status = await http.get("/_sim/status")
    assert (dropped.status_code, dropped.json()) == (200, {"ok": True, "closed": 2})
    assert (empty.status_code, empty.json()) == (200, {"ok": True, "closed": 3})
    assert (published.status_code, published.json()) == (200, {"ok": True, "delivered": 1})
    assert (status.status_code, status.json()) == (200, {"dropped": 3, "published": 1})
    assert toy.published == [{"event": "UserStatus"}]


async def test_bodies_that_are_not_a_json_object_are_refused() -> None:
    toy = Toy()
    async with serving(toy) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        not_json = await http.post("/_sim/drop", content=b"{drop")
        a_list = await http.post("/_sim/drop", json=[1, 2])
        too_deep = await http.post("/_sim/drop", content=b"[" * 100_000 + b"]" * 100_000)
    assert (not_json.status_code, not_json.json()) == (400, {"error": "the body is not JSON"})
    assert (a_list.status_code, a_list.json()) == (
        400, {"error": "the body must be a JSON object"})
    assert (too_deep.status_code, too_deep.json()) == (400, {"error": "the body is not JSON"})
    assert toy.dropped == 0


async def test_an_unknown_action_is_a_404_with_did_you_mean_and_the_known_ones() -> None:
    toy = Toy()
    async with serving(toy) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        close = await http.post("/_sim/dorp", json={})
        far = await http.post("/_sim/explode", json={})
        status_posted = await http.post("/_sim/status", json={})
        action_got = await http.get("/_sim/drop")
    assert close.status_code == 404
    assert close.json() == {"error": "unknown action 'dorp' (did you mean 'drop'?)",
                            "known": ["drop", "publish"]}
    assert far.status_code == 404
    assert far.json()["error"] == "unknown action 'explode' (known: drop, publish)"
    assert status_posted.status_code == 404  # status is read with GET, not an action
    assert action_got.status_code == 405  # actions are POSTed
    assert toy.dropped == 0


async def test_an_action_refusing_its_parameters_is_a_400_naming_why() -> None:
    toy = Toy()
    async with serving(toy) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        missing = await http.post("/_sim/publish", json={})
        wrong = await http.post("/_sim/publish", json={"event": 42})
        bad_number = await http.post("/_sim/drop", json={"count": "many"})
    assert (missing.status_code, missing.json()) == (400, {"error": "KeyError: 'event'"})
    assert (wrong.status_code, wrong.json()) == (
        400, {"error": "TypeError: 'event' must be a string"})
    assert bad_number.status_code == 400
    assert bad_number.json()["error"].startswith("ValueError: invalid literal for int()")
    assert toy.published == [] and toy.dropped == 0


async def test_the_client_gets_and_posts_and_returns_status_and_answer() -> None:
    toy = Toy()
    async with serving(toy) as url:

        def call(action: str, params: dict[str, Any] | None = None) -> tuple[int, Any]:
            return simulator_control(url + "/", action, params, timeout=30)

        assert await anyio.to_thread.run_sync(call, "drop", {"count": 4}) == (
            200, {"ok": True, "closed": 4})
        assert await anyio.to_thread.run_sync(call, "status") == (
            200, {"dropped": 4, "published": 0})
        code, answer = await anyio.to_thread.run_sync(call, "dorp")
        assert code == 404 and "did you mean 'drop'?" in answer["error"]
        code, answer = await anyio.to_thread.run_sync(call, "publish", {})
        assert (code, answer) == (400, {"error": "KeyError: 'event'"})


def test_the_client_says_when_nobody_listens() -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        simulator_control(f"http://127.0.0.1:{port}", "status", timeout=5)
