"""The simulator plays the document's server side; checked with a bare websockets client."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from ccbus_avaya.cli import simulate_avaya
from ccbus_avaya.protocol import AuthStatus, authentication_message, validate_notification
from click.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.anyio


async def subscribe(sim: Any) -> tuple[str, str, str]:
    """A token and a WebSocket subscription, through the REST API: (token, id, endpoint)."""
    async with httpx.AsyncClient(trust_env=False) as http:
        token = (
            await http.post(
                sim.token_url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": sim.client_id,
                    "client_secret": sim.client_secret,
                },
            )
        ).json()["access_token"]
        answer = await http.post(
            f"{sim.url}/api/notification/v1/accounts/{sim.account_id}/subscriptions",
            json={
                "family": "AGENT_ENGAGEMENT",
                "events": ["ALL"],
                "transport": {"type": "WEBSOCKET"},
            },
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 201
    doc = answer.json()
    return token, doc["subscriptionId"], doc["transport"]["endpoint"]


async def first_answer(endpoint: str, message: str) -> tuple[dict[str, Any], int | None]:
    async with connect(endpoint, proxy=None) as ws:
        await ws.send(message)
        answer = json.loads(await ws.recv())
        with anyio.fail_after(2):
            try:
                await ws.recv()
            except ConnectionClosed:
                pass
        return answer, ws.close_code


async def test_every_authentication_status_is_reachable(simulator: Any) -> None:
    async with simulator() as sim:
        token, sub, endpoint = await subscribe(sim)
        ok = authentication_message(sub, token)
        cases = {
            AuthStatus.CONSTRAINT_VIOLATION: json.dumps({"event": "ping"}),
            AuthStatus.INVALID_TOKEN: authentication_message(sub, "not-a-token"),
            AuthStatus.UNKNOWN_SUBSCRIPTION: authentication_message("no-such-sub", token),
        }
        for status, message in cases.items():
            answer, code = await first_answer(endpoint, message)
            assert (answer["event"], answer["status"], code) == (
                "authenticationResponse",
                status,
                1008,
            )
        sim.force_auth_status(AuthStatus.INTERNAL_SERVER_ERROR)
        answer, code = await first_answer(endpoint, ok)
        assert (answer["status"], code) == (AuthStatus.INTERNAL_SERVER_ERROR, 1011)
        async with connect(endpoint, proxy=None) as ws:
            await ws.send(ok)
            confirmed = json.loads(await ws.recv())
            assert confirmed == {
                "event": "authenticationResponse",
                "status": "CONNECTION_CONFIRMED",
                "subscriptionId": sub,
                "pingInterval": 300,
                "expiresInterval": confirmed["expiresInterval"],
            }
            await ws.send(json.dumps({"event": "ping", "subscriptionId": sub}))
            assert json.loads(await ws.recv()) == {"event": "pong"}
            await sim.publish({"event": "ChannelReady", "agentId": "a1", "channelId": "Voice"})
            note = json.loads(await ws.recv())
            assert validate_notification(note) == []
            assert note["subscriptionId"] == sub and note["accountId"] == sim.account_id
    assert set(sim.stats.auth) == set(AuthStatus)


async def test_no_ping_within_ping_interval_closes_and_deactivates(simulator: Any) -> None:
    async with simulator(ping_interval=1) as sim:
        token, sub, endpoint = await subscribe(sim)
        async with connect(endpoint, proxy=None) as ws:
            await ws.send(authentication_message(sub, token))
            await ws.recv()
            with anyio.fail_after(3), pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1008
        assert not sim.subscriptions[sub].active
        assert sim.stats.closed_no_ping == 1


async def test_expiry_closes_connections_and_later_authentication_fails(simulator: Any) -> None:
    async with simulator(expires_in=0.5) as sim:
        token, sub, endpoint = await subscribe(sim)
        async with connect(endpoint, proxy=None) as ws:
            await ws.send(authentication_message(sub, token))
            await ws.recv()
            with anyio.fail_after(2), pytest.raises(ConnectionClosed):
                await ws.recv()
        answer, _ = await first_answer(endpoint, authentication_message(sub, token))
        assert answer["status"] == AuthStatus.UNKNOWN_SUBSCRIPTION


async def test_the_rest_api_refuses_what_the_document_does_not_allow(simulator: Any) -> None:
    async with simulator() as sim, httpx.AsyncClient(trust_env=False) as http:
        url = f"{sim.url}/api/notification/v1/accounts/{sim.account_id}/subscriptions"
        body = {"family": "AGENT_ENGAGEMENT", "events": ["ALL"], "transport": {"type": "WEBSOCKET"}}
        assert (await http.post(url, json=body)).status_code == 401
        token, _, _ = await subscribe(sim)
        auth = {"Authorization": f"Bearer {token}"}
        for bad in (
            {**body, "family": "QUEUE"},
            {**body, "events": ["Nope"]},
            {**body, "transport": {"type": "SMOKE"}},
            {**body, "extra": 1},
        ):
            answer = await http.post(url, json=bad, headers=auth)
            assert answer.status_code == 400, bad
            assert answer.json()["message"]
        bad_grant = await http.post(sim.token_url, data={"grant_type": "password"})
        assert bad_grant.json()["error"] == "unsupported_grant_type"


async def test_the_control_api_and_the_inject_command(simulator: Any) -> None:
    async with simulator() as sim:
        token, sub, endpoint = await subscribe(sim)
        runner = CliRunner()

        def inject(*args: str) -> Any:
            return runner.invoke(simulate_avaya, ["inject", *args, "--url", sim.url])

        result = await anyio.to_thread.run_sync(inject, "auth-status", "INTERNAL_SERVER_ERROR")
        assert result.exit_code == 0, result.output
        answer, _ = await first_answer(endpoint, authentication_message(sub, token))
        assert answer["status"] == AuthStatus.INTERNAL_SERVER_ERROR
        result = await anyio.to_thread.run_sync(inject, "pongs", "off")
        assert json.loads(result.output)["pongs"] is False
        result = await anyio.to_thread.run_sync(inject, "status")
        status = json.loads(result.output)
        assert status["stats"]["auth"] == {"CONNECTION_FAILED_INTERNAL_SERVER_ERROR": 1}
        assert sub in status["subscriptions"]
        result = await anyio.to_thread.run_sync(inject, "expire")
        assert json.loads(result.output)["expired"] == 1
        result = await anyio.to_thread.run_sync(inject, "auth-status")
        assert result.exit_code != 0 and "needs a STATUS" in result.output
