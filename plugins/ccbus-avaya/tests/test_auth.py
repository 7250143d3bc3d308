"""Tokens from the simulator's A&A endpoint: cached, refreshed before expiry, refusals sorted."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from ccbus_avaya.auth import TokenProvider
from ccbus_avaya.errors import Misconfigured, Transient

pytestmark = pytest.mark.anyio


def provider(sim: Any, http: httpx.AsyncClient, **kwargs: Any) -> TokenProvider:
    options = {"client_id": sim.client_id, "client_secret": sim.client_secret, **kwargs}
    secret = options.pop("client_secret")
    client = options.pop("client_id")
    return TokenProvider(http, sim.token_url, client, secret, **options)


async def test_a_token_is_reused_then_refreshed_before_it_expires(simulator: Any) -> None:
    async with simulator(token_ttl=0.6) as sim, httpx.AsyncClient(trust_env=False) as http:
        tokens = provider(sim, http, refresh_before=0.2)
        first = await tokens.get()
        assert (await tokens.get()) == first
        assert sim.stats.tokens_issued == 1
        await anyio.sleep(0.45)  # inside the refresh margin, before the expiry
        second = await tokens.get()
        assert second.value != first.value
        assert sim._token_valid(first.value)  # the old one had not expired yet
        assert sim.stats.tokens_issued == 2


async def test_an_invalidated_token_is_fetched_again(simulator: Any) -> None:
    async with simulator() as sim, httpx.AsyncClient(trust_env=False) as http:
        tokens = provider(sim, http)
        first = await tokens.get()
        tokens.invalidate(first)
        assert (await tokens.get()).value != first.value


async def test_wrong_credentials_are_a_configuration_error(simulator: Any) -> None:
    async with simulator() as sim, httpx.AsyncClient(trust_env=False) as http:
        tokens = provider(sim, http, client_secret="wrong")
        with pytest.raises(Misconfigured, match="invalid_client: Invalid client credentials"):
            await tokens.get()


async def test_a_failing_token_service_is_transient(simulator: Any) -> None:
    async with simulator() as sim, httpx.AsyncClient(trust_env=False) as http:
        sim.fail_token_requests(1, status=503)
        tokens = provider(sim, http)
        with pytest.raises(Transient, match="HTTP 503"):
            await tokens.get()
        assert (await tokens.get()).value  # the next request succeeds


async def test_an_unreachable_token_service_is_transient() -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        tokens = TokenProvider(http, "http://127.0.0.1:9/token", "id", "secret")
        with pytest.raises(Transient, match="ConnectError"):
            await tokens.get()
