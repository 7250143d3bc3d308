"""The subscription REST call against the simulator, and reading the document's answer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from ccbus_avaya.auth import TokenProvider
from ccbus_avaya.errors import Misconfigured, Transient
from ccbus_avaya.subscription import SubscriptionClient, parse_subscription

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures"


def clients(sim: Any, http: httpx.AsyncClient, account: str | None = None) -> Any:
    tokens = TokenProvider(http, sim.token_url, sim.client_id, sim.client_secret)
    return tokens, SubscriptionClient(http, sim.url, account or sim.account_id, tokens, ["ALL"])


async def test_create_returns_the_documented_fields(simulator: Any) -> None:
    async with simulator(expires_in=900, ping_interval=300) as sim:
        async with httpx.AsyncClient(trust_env=False) as http:
            _, subscriptions = clients(sim, http)
            subscription = await subscriptions.create("WEBSOCKET")
    documented = json.loads((FIXTURES / "subscription-response.json").read_text())
    assert set(subscription.raw) == set(documented)
    assert set(subscription.raw["transport"]) == set(documented["transport"])
    assert subscription.endpoint.startswith(f"ws://127.0.0.1:{sim.port}/ws/notification/v1/")
    assert subscription.endpoint.endswith(f"/{sim.account_id}/{subscription.id}")
    assert subscription.ping_interval == 300
    assert 899 <= subscription.lifetime <= 900
    assert sim.subscriptions[subscription.id].transport == "WEBSOCKET"


def test_the_documents_answer_is_understood() -> None:
    doc = json.loads((FIXTURES / "subscription-response.json").read_text())
    subscription = parse_subscription(doc, "WEBSOCKET")
    assert subscription.id == "fdbec917-e76e-4645-8120-4eac46f29487"
    assert subscription.endpoint.startswith("wss://uk.cc.avayacloud.com/ws/notification/")
    assert subscription.ping_interval == 300
    assert subscription.lifetime == 900  # expiresIn, not the (2020) expiresAt
    assert subscription.renew_at(60) == subscription.expires_at - 60
    doc.pop("expiresIn")
    assert parse_subscription(doc, "WEBSOCKET").lifetime == 0  # expiresAt is long past
    with pytest.raises(Transient, match="no transport.endpoint"):
        parse_subscription({"subscriptionId": "s", "transport": {}}, "WEBSOCKET")


async def test_a_revoked_token_is_replaced_once(simulator: Any) -> None:
    async with simulator() as sim, httpx.AsyncClient(trust_env=False) as http:
        tokens, subscriptions = clients(sim, http)
        await tokens.get()
        sim.reject_tokens()
        assert (await subscriptions.create("WEBSOCKET")).id
        assert sim.stats.tokens_issued == 2


async def test_a_wrong_account_is_a_configuration_error(simulator: Any) -> None:
    async with simulator() as sim, httpx.AsyncClient(trust_env=False) as http:
        _, subscriptions = clients(sim, http, account="NOSUCH")
        with pytest.raises(Misconfigured, match="HTTP 404: account NOSUCH not found"):
            await subscriptions.create("WEBSOCKET")


async def test_a_webhook_subscription_carries_its_endpoint(simulator: Any) -> None:
    async with simulator() as sim, httpx.AsyncClient(trust_env=False) as http:
        _, subscriptions = clients(sim, http)
        subscription = await subscriptions.create("WEBHOOK", "https://ccbus.example/avaya")
        assert sim.subscriptions[subscription.id].endpoint == "https://ccbus.example/avaya"
        with pytest.raises(Misconfigured, match="needs an http"):
            await subscriptions.create("WEBHOOK", "ftp://nope")


def test_renewal_is_at_most_half_the_lifetime() -> None:
    now = time.monotonic()
    doc = {"subscriptionId": "s", "expiresIn": 2, "transport": {"endpoint": "ws://x"}}
    subscription = parse_subscription(doc, "WEBSOCKET")
    assert subscription.renew_at(60) - now == pytest.approx(1.0, abs=0.05)
