"""``transport: webhook``: the simulator posts notifications to ccbus's own HTTP listener."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest
from ccbus_avaya.webhook_transport import with_token

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def webhook_options(sim: Any, port: int, fast: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        **sim.source_options(),
        **fast,
        "transport": "webhook",
        "callback_url": f"http://127.0.0.1:{port}/avaya/av",
        "webhook_secret": "s3cret-token",
        **more,
    }


async def test_notifications_posted_to_the_listener_take_the_same_path(
    simulator: Any,
    avaya_bus: Any,
    agent_body: Any,
    fast: Any,
    all_doc_notifications: Any,
) -> None:
    port = free_port()
    async with (
        simulator() as sim,
        avaya_bus(webhook_options(sim, port, fast), listen=f"127.0.0.1:{port}") as h,
    ):
        await h.wait_until(lambda: h.state() == "subscribed", timeout=5)
        [subscription] = sim.subscriptions.values()
        assert subscription.transport == "WEBHOOK"
        assert subscription.endpoint == f"http://127.0.0.1:{port}/avaya/av?token=s3cret-token"
        await sim.publish(agent_body(1, "NOT_READY"))
        await sim.publish(agent_body(1, "NOT_READY"), correlation_id="dup")
        await sim.publish(agent_body(1, "NOT_READY"), correlation_id="dup")  # a re-post
        for doc in all_doc_notifications.values():
            await sim.publish(doc["body"])
        await h.wait_until(
            lambda: len({t for t in h.recorder.types() if t.startswith("avaya.")}) == 13,
            timeout=5,
        )
        url = f"http://127.0.0.1:{port}/avaya/av"
        async with httpx.AsyncClient(trust_env=False) as http:
            no_token = await http.post(url, json={"body": {}})
            bad_json = await http.post(url + "?token=s3cret-token", content=b"{oops")
            mixed = await http.post(
                url,
                headers={"Authorization": "Bearer s3cret-token"},
                json=[
                    {"correlationId": "m1", "body": agent_body(2)},
                    {"correlationId": "m2", "body": {"event": "Teleported"}},
                ],
            )
        await h.wait_until(lambda: "2" in h.recorder.numbers(), timeout=5)
        rejected = dict(h.source().ctx.refusals.counts)
        counted = {r: h.bad_input(r) for r in ("invalid_json", "unknown_event", "unauthorized")}
    assert sim.stats.webhook_posts == 16 and sim.stats.webhook_failures == 0
    assert (no_token.status_code, bad_json.status_code) == (401, 400)
    assert (mixed.status_code, mixed.json()) == (202, {"accepted": 1, "rejected": 1})
    assert h.recorder.numbers().count("1") == 2  # the re-posted duplicate was dropped
    assert rejected == {"invalid_json": 1, "unknown_event": 1, "unauthorized": 1}
    assert counted == rejected  # on /metrics: ccbus_source_bad_input_total{source,reason}
    canonical = [t for t in h.recorder.types() if not t.startswith("avaya.")]
    assert "agent.state_changed" in canonical and "call.started" in canonical


async def test_a_webhook_subscription_is_renewed_before_it_expires(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    port = free_port()
    async with simulator(expires_in=0.8) as sim:
        options = webhook_options(sim, port, fast, renew_before=0.3)
        async with avaya_bus(options, listen=f"127.0.0.1:{port}") as h:
            await h.wait_until(lambda: sim.stats.subscriptions_created >= 3, timeout=3)
            await sim.publish(agent_body(5))
            await h.wait_until(lambda: "5" in h.recorder.numbers(), timeout=5)
    assert h.recorder.numbers() == ["5"]  # overlapping subscriptions: still once


def test_the_secret_is_added_to_the_callback_url() -> None:
    assert with_token("https://x.example/hook?a=1&token=old", "new") == (
        "https://x.example/hook?a=1&token=new"
    )
    assert json.loads(json.dumps(with_token("http://h/p", "t"))) == "http://h/p?token=t"


async def test_a_poison_post_is_answered_dead_lettered_and_counted(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    """Issue #17 items 2 and 6 over the webhook: a body nested 100,000 levels deep gets a
    final answer (400, not a 5xx Avaya would retry), a dead letter and a counter; the next
    post is accepted."""
    deep = b"[" * 100_000 + b"]" * 100_000
    poison = b'{"correlationId": "poison", "body": {"event": "AgentState", "deep": ' + deep + b"}}"
    port = free_port()
    async with (
        simulator() as sim,
        avaya_bus(webhook_options(sim, port, fast), listen=f"127.0.0.1:{port}") as h,
    ):
        await h.wait_until(lambda: h.state() == "subscribed", timeout=5)
        url = f"http://127.0.0.1:{port}/avaya/av?token=s3cret-token"
        async with httpx.AsyncClient(trust_env=False) as http:
            answer = await http.post(url, content=poison)
            good = await http.post(url, json={"correlationId": "g1", "body": agent_body(3)})
        await h.wait_until(lambda: "3" in h.recorder.numbers(), timeout=5)
        letters = h.source().ctx.refusals.dead_letters.read()
        counted = h.bad_input("invalid_json")
        runtime = h.bus.sources["av"]
        restarts, state = runtime.restarts, runtime.state
    assert answer.status_code == 400
    assert (good.status_code, good.json()) == (202, {"accepted": 1, "rejected": 0})
    [letter] = letters
    assert letter["reason"] == "invalid_json" and "nested too deeply" in str(letter["detail"])
    assert letter["message"] == poison[: 64 * 1024].decode() and letter["truncated"] is True
    assert counted == 1
    assert (restarts, state) == (0, "subscribed")
    assert sim.stats.subscriptions_created == 1
