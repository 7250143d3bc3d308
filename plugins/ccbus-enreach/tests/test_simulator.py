"""The RTE simulator as a SignalR peer: tokens, negotiate, the WebSocket hub and its methods.

Clients here are real: httpx for REST, signalrcore (through the plugin's
:class:`HubSession`) for the hub, and the ``websockets`` library for the
raw protocol cases no SignalR client would produce.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import jwt
import pytest
from ccbus_enreach.cli import simulate_enreach
from ccbus_enreach.errors import HubError, Unauthorized
from ccbus_enreach.hub import HubSession
from ccbus_enreach.scenarios import ANNA, CALLBACKS, SALES, contact_center
from ccbus_enreach.simulator import RteSimulator
from click.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.anyio

RS = "\x1e"
UNKNOWN_USER = "a1eeb030-ff4b-ea11-ac9c-00155d4fdcf4"


async def session(sim: RteSimulator, token: str | None = None, **kwargs: Any) -> HubSession:
    hub = HubSession(sim.hub_url, token or sim.issue_token(), max_pending=100, **kwargs)
    await hub.start(10)
    return hub


async def test_the_token_call_checks_basic_auth_and_the_user() -> None:
    async with RteSimulator() as sim, httpx.AsyncClient(trust_env=False) as http:
        ok = await http.get(f"{sim.url}/token/me/rte/", auth=(sim.username, sim.secret))
        own = await http.get(
            f"{sim.url}/token/{sim.org.api_user}/rte/", auth=(sim.username, sim.secret)
        )
        bad = await http.get(f"{sim.url}/token/me/rte/", auth=(sim.username, "nope"))
        none = await http.get(f"{sim.url}/token/me/rte/")
        other = await http.get(f"{sim.url}/token/{ANNA}/rte/", auth=(sim.username, sim.secret))
    assert ok.status_code == own.status_code == 200
    assert (bad.status_code, none.status_code, other.status_code) == (401, 401, 403)
    doc = ok.json()
    assert doc["WssEndpoint"] == sim.hub_url
    claims = jwt.decode(doc["Token"], options={"verify_signature": False})
    assert claims["sub"] == sim.org.api_user
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize("skip_negotiation", [False, True])
async def test_a_bad_or_expired_token_gets_401(skip_negotiation: bool) -> None:
    async with RteSimulator() as sim:
        for token in ("not-a-jwt", sim.issue_token(ttl=-10)):
            hub = HubSession(
                sim.hub_url, token, max_pending=10, skip_negotiation=skip_negotiation
            )
            with pytest.raises(Unauthorized):
                await hub.start(10)
            await hub.stop()
        assert sim.stats.hub_refusals == 2
        assert sim.stats.connections == 0


async def test_the_browser_way_with_the_token_in_the_query_string() -> None:
    async with RteSimulator() as sim:
        token = sim.issue_token()
        async with httpx.AsyncClient(trust_env=False) as http:
            negotiated = (
                await http.post(
                    f"{sim.url}/rte/negotiate?negotiateVersion=1&access_token={token}"
                )
            ).json()
        assert negotiated["negotiateVersion"] == 1
        assert negotiated["connectionToken"] != negotiated["connectionId"]
        url = f"{sim.hub_url}?id={negotiated['connectionToken']}&access_token={token}"
        async with connect(url, proxy=None) as ws:
            await ws.send(json.dumps({"protocol": "json", "version": 1}) + RS)
            assert await ws.recv() == "{}" + RS
            await ws.send(
                json.dumps({"type": 1, "invocationId": "7", "target": "availablesubscriptions",
                            "arguments": []}) + RS
            )
            answer = json.loads(str(await ws.recv()).rstrip(RS))
        assert answer["invocationId"] == "7"
        assert "UserStatus" in answer["result"]
        # a negotiated id is used once
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, proxy=None):
                pass
        assert refused.value.response.status_code == 404


async def test_an_unsupported_protocol_is_refused_in_the_handshake() -> None:
    async with RteSimulator() as sim:
        url = f"{sim.hub_url}?access_token={sim.issue_token()}"
        async with connect(url, proxy=None) as ws:
            await ws.send(json.dumps({"protocol": "messagepack", "version": 1}) + RS)
            answer = json.loads(str(await ws.recv()).rstrip(RS))
        assert answer == {"error": "The protocol 'messagepack' is not supported."}


async def test_subscribe_validates_each_item_as_the_document_says() -> None:
    async with RteSimulator() as sim:
        sim.deny(CALLBACKS)
        hub = await session(sim)
        try:
            results = await hub.invoke(
                "Subscribe",
                [[
                    {"EntityId": SALES, "EventName": "QueueStatus"},
                    {"EntityId": ANNA.upper(), "EventName": "userstatus"},
                    {"EntityId": "not-a-guid", "EventName": "Nonsense"},
                    {"EntityId": ANNA, "EventName": "Nonsense"},
                    {"EntityId": UNKNOWN_USER, "EventName": "UserStatus"},
                    {"EntityId": CALLBACKS, "EventName": "CallbackChanged"},
                    {"EntityId": ANNA, "EventName": "QueueStatus"},
                ]],
                10,
            )
            assert [(r["subscribed"], r["message"]) for r in results] == [
                (True, None),
                (True, None),
                (False, "Invalid EntityId"),  # checked first, whatever the event
                (False, "Invalid event name"),
                (False, "Unauthorized"),  # not an entity of the user's organisation
                (False, "Unauthorized"),  # denied
                (False, "Invalid event name"),  # a queue event for a user
            ]
            assert results[0] == {
                "subscribed": True,
                "message": None,
                "entityId": SALES,
                "eventName": "queuestatus",
            }
            active = await hub.invoke("ActiveSubscriptions", [], 10)
            assert sorted((a["entityId"], a["eventType"]) for a in active) == [
                (ANNA, "UserStatus"),
                (SALES, "QueueStatus"),
            ]
            assert {a["entityType"] for a in active} == {"User", "Queue"}
            removed = await hub.invoke(
                "Unsubscribe", [[{"EntityId": SALES, "EventName": "QueueStatus"}]], 10
            )
            assert removed[0]["subscribed"] is False
            assert len(await hub.invoke("ActiveSubscriptions", [], 10)) == 1
            assert await hub.invoke("UnsubscribeAll", [], 10) is True
            assert await hub.invoke("ActiveSubscriptions", [], 10) == []
        finally:
            await hub.stop()


async def test_hub_errors_come_back_as_errors_of_that_call() -> None:
    async with RteSimulator() as sim:
        hub = await session(sim)
        try:
            with pytest.raises(HubError, match="Invocation provides 1 argument"):
                await hub.invoke("AvailableSubscriptions", [[]], 10)
            with pytest.raises(HubError, match="Method does not exist"):
                await hub.invoke("SubscribeEverything", [], 10)
            with pytest.raises(HubError, match="Error binding arguments"):
                await hub.invoke("Subscribe", ["QueueStatus"], 10)
            assert len(await hub.invoke("AvailableSubscriptions", [], 10)) == 36
        finally:
            await hub.stop()


async def test_subscribed_events_arrive_and_others_do_not() -> None:
    async with RteSimulator(wire_case="pascal") as sim:
        hub = await session(sim)
        try:
            await hub.invoke(
                "Subscribe", [[{"EntityId": ANNA, "EventName": "UserStatus"}]], 10
            )
            assert await sim.publish("UserStatus", SALES) == 0
            assert await sim.publish("QueueStatus", SALES) == 0
            assert await sim.publish("UserStatus", ANNA, {"Talking": True}) == 1
            with anyio.fail_after(10):
                [[message]] = await hub.handoff.get_batch()
            assert message["subscription"]["entityId"] == ANNA
            data = message["data"]
            assert (data["EventType"], data["EntityId"], data["Talking"]) == (
                "UserStatus", ANNA, True,
            )
            assert data["OrganizationId"] == sim.org.id
            assert len(data["Timestamp"].split(".")[1]) == 8  # seven digits and a Z, like .NET
        finally:
            await hub.stop()


async def test_the_hub_pings_and_drops_a_silent_client() -> None:
    async with RteSimulator(keepalive=0.1, client_timeout=0.6) as sim:
        hub = await session(sim)
        try:
            seen = hub.protocol.last_seen
            with anyio.fail_after(10):
                while hub.protocol.last_seen == seen:  # noqa: ASYNC110 - a hub ping arrives
                    await anyio.sleep(0.02)
                await hub.closed.wait()  # this client never pings
            assert sim.stats.client_timeouts == 1
        finally:
            await hub.stop()


async def test_a_restart_closes_connections_and_invalidates_tokens() -> None:
    async with RteSimulator() as sim:
        token = sim.issue_token()
        hub = await session(sim, token)
        try:
            assert await sim.restart() == 1
            with anyio.fail_after(10):
                await hub.closed.wait()
        finally:
            await hub.stop()
        again = HubSession(sim.hub_url, token, max_pending=10)
        with pytest.raises(Unauthorized):
            await again.start(10)
        await again.stop()
        fresh = await session(sim)
        await fresh.stop()


async def test_the_control_api_and_the_inject_command() -> None:
    """``ccbus simulate enreach inject`` over the control API (``POST /_sim/<fault>``)."""
    async with RteSimulator() as sim:
        hub = await session(sim)
        runner = CliRunner()

        def inject(*args: str) -> Any:
            return runner.invoke(simulate_enreach, ["inject", *args, "--url", sim.url])

        try:
            await hub.invoke(
                "Subscribe", [[{"EntityId": ANNA, "EventName": "UserStatus"}]], 10
            )
            result = await anyio.to_thread.run_sync(inject, "deny", CALLBACKS)
            assert result.exit_code == 0, result.output
            assert json.loads(result.output) == {"ok": True, "denied": [CALLBACKS]}
            result = await anyio.to_thread.run_sync(inject, "publish", "UserStatus", ANNA)
            assert json.loads(result.output) == {"ok": True, "delivered": 1}
            with anyio.fail_after(10):
                [[message]] = await hub.handoff.get_batch()
            assert message["subscription"]["entityId"] == ANNA
            result = await anyio.to_thread.run_sync(inject, "status")
            [client] = json.loads(result.output)["clients"]
            assert client["subscriptions"] == [f"{ANNA}/UserStatus"]
            result = await anyio.to_thread.run_sync(
                inject, "publish", "UserStatus", ANNA, "--fields", "[1]"
            )
            assert result.exit_code == 1  # the simulator's 400, said and not hidden
            assert json.loads(result.output) == {"error": "TypeError: 'fields' must be an object"}
            result = await anyio.to_thread.run_sync(inject, "deny")
            assert result.exit_code != 0 and "deny needs an ENTITY id" in result.output
            result = await anyio.to_thread.run_sync(inject, "drop")
            assert json.loads(result.output) == {"ok": True, "closed": 1}
            with anyio.fail_after(10):
                await hub.closed.wait()
        finally:
            await hub.stop()


async def test_the_scenario_reaches_subscribers_in_order() -> None:
    async with RteSimulator() as sim:
        hub = await session(sim)
        try:
            pairs = sorted({(s.entity, s.event) for s in contact_center()})
            items = [{"EntityId": e, "EventName": n} for e, n in pairs]
            results = await hub.invoke("Subscribe", [items], 10)
            assert all(r["subscribed"] for r in results)
            steps = contact_center()
            delivered = await sim.play(steps, speed=0)
            assert delivered == len(steps)
            received: list[Any] = []
            with anyio.fail_after(10):
                while len(received) < delivered:
                    received.extend(await hub.handoff.get_batch())
            assert [m[0]["data"]["eventType"] for m in received] == [s.event for s in steps]
        finally:
            await hub.stop()


async def test_a_burst_arrives_whole_and_in_order_through_buffered_reads() -> None:
    """Thousands of frames back to back: the session reads them many per ``recv``
    (see ``hub._buffer_reads``) and must still hand over every one, in order."""
    async with RteSimulator() as sim:
        hub = HubSession(sim.hub_url, sim.issue_token(), max_pending=10_000)
        await hub.start(10)
        try:
            client = hub.hub.transport._client
            assert client._recv_exactly.__qualname__.startswith("_buffer_reads")
            await hub.invoke("Subscribe", [[{"EntityId": ANNA, "EventName": "UserStatus"}]], 10)
            sent = await sim.blast(3000)
            assert sent["sent"] == 3000, sent
            ids: list[str] = []
            with anyio.fail_after(30):
                while len(ids) < 3000:
                    ids.extend(m["data"]["id"] for [m] in await hub.handoff.get_batch())
            assert len(ids) == len(set(ids)) == 3000
            assert hub.errors == {}
        finally:
            await hub.stop()


def test_buffered_reads_give_exact_sizes_and_fail_as_signalrcore_does() -> None:
    import socket
    from types import SimpleNamespace

    from ccbus_enreach.hub import _buffer_reads
    from signalrcore.transport.sockets.errors import SocketClosedError

    ours, theirs = socket.socketpair()
    client = SimpleNamespace(sock=ours, _recv_exactly=None)
    _buffer_reads(client)
    theirs.sendall(b"\x81\x7e\x01\x00" + b"x" * 256 + b"\x81\x02")
    assert client._recv_exactly(2) == b"\x81\x7e"
    assert client._recv_exactly(2) == b"\x01\x00"
    assert client._recv_exactly(256) == b"x" * 256
    assert client._recv_exactly(2) == b"\x81\x02"
    theirs.sendall(b"o")
    theirs.sendall(b"k")  # a payload split across reads still comes back whole
    assert client._recv_exactly(2) == b"ok"
    theirs.close()
    with pytest.raises(SocketClosedError):
        client._recv_exactly(1)
    ours.close()
