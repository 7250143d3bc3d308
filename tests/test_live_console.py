"""The live view as the admin's console, in Debian's headless Chromium against a running bus.

One line per event (expanded to the whole envelope by a click), filters by
type, source and rule, pause; timestamps on events, rule hits and dead
letters; rule hits linking to their trace; dead letters retried and purged
with buttons.  Retrying a dead letter is a real mouse click that makes the
bus deliver the call to a local HTTP receiver that failed the first time.
The actions change state, so a POST without the admin token, from another
origin, or to a listener bound beyond loopback without a token is refused.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from chromium import Chromium
from http_receiver import HttpReceiver
from support import free_port, write
from test_live_view import VISIBLE_EVENTS, click, make_bus, wait_for
from test_observability import Scripted

from ccbus import Event
from ccbus.runtime.bus import Bus

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TIME = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$")
RULES = """
    rules:
      - name: crm-ticket
        on: call.abandoned
        do:
          - webhook: {url: "URL", json: {caller: "{caller}"}}
      - name: long-call
        on: call.ended
        if: duration > 60
        do: [record: "{duration}"]
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as r:
        yield r


def console_bus(tmp_path: Path, receiver: HttpReceiver, port: int, http: str = "") -> tuple[
        Bus, Scripted]:
    write(tmp_path / "rules" / "r.yaml", RULES.replace("URL", receiver.url_for("/crm")))
    plugin = Scripted()
    bus = make_bus(tmp_path, f"""
        sources: {{pbx: {{plugin: scripted}}}}
        http: {{listen: "127.0.0.1:{port}"{http}}}
        state_dir: {tmp_path / "state"}
        delivery: {{attempts: 1}}
    """, plugin, persist_state=False)
    return bus, plugin


async def test_the_console_in_headless_chromium(tmp_path: Path, receiver: HttpReceiver) -> None:
    port = free_port()
    bus, plugin = console_bus(tmp_path, receiver, port)
    base = f"http://127.0.0.1:{port}"
    receiver.fail(2, status=503)  # the CRM is down for the first two calls, then comes back
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        await plugin.states.send("connected")
        big = {"duration": 300, "notes": "x" * 2000, "nested": {"a": [1, 2, 3]}}
        await bus.publish(Event(type="call.ended", source="pbx", id="long", subject="c-1",
                                data=big))
        for n in range(2):
            await bus.publish(Event(type="call.abandoned", source="pbx", id=f"ab{n}",
                                    subject=f"q-{n}", data={"caller": f"+3120555000{n}"}))
        await receiver.wait_for_async(2, timeout=30)

        await anyio.sleep(0.5)
        opened = time.time()
        async with Chromium(f"{base}/live") as page:
            await page.wait_for("document.getElementById('conn').textContent === 'live'")
            await page.wait_for(f"{VISIBLE_EVENTS}.length === 3")
            await page.wait_for("document.querySelectorAll('tr.dead').length === 2")
            assert await page.evaluate("document.getElementById('dead-count').textContent") == "2"

            # one line per event, however big its data: the rows are all one line high
            heights = await page.evaluate(f"{VISIBLE_EVENTS}.map(r => r.offsetHeight)")
            line = await page.evaluate("document.querySelector('th').offsetHeight")
            assert max(heights) <= line + 2, (heights, line)
            cells = await page.evaluate(f"""{VISIBLE_EVENTS}.map(r =>
                [...r.children].map(c => c.textContent))""")
            assert [c[1:5] for c in cells] == [
                ["pbx", "call.abandoned", "q-1", "crm-ticket"],
                ["pbx", "call.abandoned", "q-0", "crm-ticket"],
                ["pbx", "call.ended", "c-1", "long-call"]], cells
            assert all(TIME.match(c[0]) for c in cells), cells

            # timestamps everywhere: rule hits, dead letters, sources
            for selector in ("tr.hit td.time", "tr.dead td.time", "#source-rows td.time"):
                texts = await page.evaluate(
                    f"[...document.querySelectorAll({selector!r})].map(c => c.textContent)")
                assert texts and all(TIME.match(t) for t in texts), (selector, texts)
            # a hit's time is when the rule fired, not when the page read it
            fired = await page.evaluate(
                "[...document.querySelectorAll('tr.hit')].map(r => Number(r.dataset.at))")
            assert len(fired) == 3 and all(at < opened for at in fired), (fired, opened)
            # a rule hit links to its trace
            href = await page.evaluate(
                "document.querySelector('tr.hit[data-rule=long-call] a.trace-link').href")
            assert href == f"{base}/traces/long-call"
            async with httpx.AsyncClient() as client:
                assert (await client.get(href, timeout=10)).json()["rule"] == "long-call"

            # a click expands the whole envelope as JSON; another folds it
            await click(page, "tr.event[data-id=long] td.data")
            await page.wait_for("document.querySelector('tr.detail pre')")
            shown = await page.evaluate("JSON.parse(document.querySelector('tr.detail pre')"
                                        ".textContent)")
            assert shown["data"] == big and shown["id"] == "long" and shown["subject"] == "c-1"

            await anyio.Path(tmp_path / "shots").mkdir(exist_ok=True)
            shot = await page.screenshot(tmp_path / "shots" / "console.png")
            print(f"console screenshot: {shot}")
            assert shot.stat().st_size > 10_000
            await click(page, "tr.event[data-id=long] td.data")
            await page.wait_for("!document.querySelector('tr.detail')")

            # filter by rule (as a user types it): only what fired crm-ticket
            await page.evaluate("""(() => { const box = document.getElementById('f-rule');
                box.value = 'crm-*'; box.dispatchEvent(new Event('input')); })()""")
            assert await page.evaluate(f"{VISIBLE_EVENTS}.map(r => r.dataset.id)") == [
                "ab1", "ab0"]
            assert await page.evaluate("[...document.querySelectorAll('tr.hit')]"
                                       ".filter(r => !r.hidden).map(r => r.dataset.rule)"
                                       ) == ["crm-ticket", "crm-ticket"]
            await page.evaluate("""(() => { const box = document.getElementById('f-rule');
                box.value = ''; box.dispatchEvent(new Event('input')); })()""")

            # pause holds new lines; resume shows them
            await click(page, "#pause")
            await page.wait_for("document.getElementById('pause').textContent === 'resume'")
            await bus.publish(Event(type="call.ended", source="pbx", id="while-paused",
                                    data={"duration": 5}))
            await page.wait_for("document.getElementById('counts').textContent"
                                ".includes('1 waiting')")
            assert await page.evaluate(f"{VISIBLE_EVENTS}.length") == 3
            await click(page, "#pause")
            await page.wait_for(f"{VISIBLE_EVENTS}[0]?.dataset.id === 'while-paused'")

            # retry: a real click; the CRM is back, the call is delivered, the letter is gone
            letters = await page.evaluate(
                "[...document.querySelectorAll('tr.dead')].map(r => r.dataset.id)")
            await click(page, f"tr.dead[data-id='{letters[-1]}'] button.retry")
            [first, second, third] = await receiver.wait_for_async(3, timeout=30)
            # the retried letter is one of the two that failed (their order on the page
            # follows which of the two concurrent calls failed first)
            assert third.path == "/crm" and third.json() in (first.json(), second.json())
            await page.wait_for("document.querySelectorAll('tr.dead').length === 1", timeout=30)
            assert await page.evaluate("document.getElementById('dead-count').textContent") == "1"
            assert "back in the outbox" in await page.evaluate(
                "document.getElementById('dead-note').textContent")

            # purge: the other one is deleted for good
            await click(page, f"tr.dead[data-id='{letters[0]}'] button.purge")
            await page.wait_for("document.querySelectorAll('tr.dead').length === 0", timeout=30)
            with anyio.fail_after(30):  # delivered calls are forgotten in batches
                while await bus.outbox_counts() != (0, 0):
                    await anyio.sleep(0.1)
            await anyio.sleep(1.5)  # the dispatcher's poll: nothing more is sent
            assert len(receiver.requests) == 3
        bus.stop()


async def post(url: str, *, token: str | None = None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["X-Ccbus-Token"] = token
    async with httpx.AsyncClient() as client:
        return await client.post(url, json={"ids": [1]}, headers=headers, timeout=10)


async def test_actions_are_refused_without_the_token_or_from_another_origin(
        tmp_path: Path, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    write(credentials / "ccbus-admin", "s3cret-admin-token\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    port = free_port()
    bus, plugin = console_bus(tmp_path, receiver, port,
                              ', admin_token: "${credential:ccbus-admin}"')
    base = f"http://127.0.0.1:{port}"
    token = "s3cret-admin-token"
    receiver.fail(1, status=503)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        await bus.publish(Event(type="call.abandoned", source="pbx", id="ab",
                                data={"caller": "+31205550000"}))
        await wait_for(lambda: receiver.requests, timeout=30)
        async with httpx.AsyncClient() as client:
            with anyio.fail_after(30):
                while (await client.get(f"{base}/dead-letters")).json()["total"] != 1:
                    await anyio.sleep(0.1)
            listing = (await client.get(f"{base}/dead-letters")).json()
            assert listing["admin"] == {"enabled": True, "token_required": True}
            # no state change on GET
            assert (await client.get(f"{base}/dead-letters/retry")).status_code == 405

        refused = [
            await post(f"{base}/dead-letters/retry"),
            await post(f"{base}/dead-letters/retry", token="wrong"),
            await post(f"{base}/dead-letters/purge", token=token, Origin="http://evil.example"),
            await post(f"{base}/dead-letters/purge", token=token, **{"Sec-Fetch-Site": "cross-site"}),
            await post(f"{base}/dead-letters/purge", token=token, **{"Sec-Fetch-Site": "same-site"}),
        ]
        assert [r.status_code for r in refused] == [403] * 5, [r.text for r in refused]
        assert "admin token" in refused[0].json()["error"]
        assert "evil.example" in refused[2].json()["error"]
        assert await bus.outbox_counts() == (0, 1)  # nothing changed
        async with httpx.AsyncClient() as client:  # a form post cannot carry JSON
            form = await client.post(f"{base}/dead-letters/purge", data={"ids": "1"},
                                     headers={"X-Ccbus-Token": token}, timeout=10)
        assert form.status_code == 403 and "json" in form.json()["error"]

        # the page asks for the token and sends it in the header, from its own origin
        async with Chromium(f"{base}/live") as page:
            await page.wait_for("document.querySelectorAll('tr.dead').length === 1")
            assert await page.evaluate("document.getElementById('token-box').hidden") is False
            await click(page, "tr.dead button.retry")
            await page.wait_for("document.getElementById('dead-note').textContent"
                                ".includes('admin token')")
            await page.evaluate(f"""(() => {{ const box = document.getElementById('token');
                box.value = {token!r}; box.dispatchEvent(new Event('input')); }})()""")
            await click(page, "tr.dead button.retry")
            await receiver.wait_for_async(2, timeout=30)
            await page.wait_for("document.querySelectorAll('tr.dead').length === 0")
        with anyio.fail_after(30):  # delivered calls are forgotten in batches
            while await bus.outbox_counts() != (0, 0):
                await anyio.sleep(0.1)
        # a script sends the same (no Origin, no Sec-Fetch-Site)
        ok = await post(f"{base}/dead-letters/retry", token=token)
        assert ok.status_code == 200 and ok.json() == {"retried": [], "not_retried": [1]}
        bearer = await post(f"{base}/dead-letters/purge", Authorization=f"Bearer {token}")
        assert bearer.status_code == 200 and bearer.json() == {"purged": 0}
        # the token is a secret: nothing the listener serves shows it
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"{base}/health")).text
        assert token not in health
        bus.stop()


async def test_a_listener_beyond_loopback_refuses_actions_without_a_token(
        tmp_path: Path, receiver: HttpReceiver) -> None:
    port = free_port()
    write(tmp_path / "rules" / "r.yaml", RULES.replace("URL", receiver.url_for("/crm")))
    bus = make_bus(tmp_path, f"""
        sources: {{pbx: {{plugin: scripted}}}}
        http: {{listen: "0.0.0.0:{port}"}}
        state_dir: {tmp_path / "state"}
    """, Scripted(), persist_state=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        answer = await post(f"http://127.0.0.1:{port}/dead-letters/purge")
        assert answer.status_code == 403, answer.text
        assert "not bound to loopback" in answer.json()["error"]
        async with httpx.AsyncClient() as client:
            listing = (await client.get(f"http://127.0.0.1:{port}/dead-letters")).json()
        assert listing["admin"] == {"enabled": False, "token_required": False}
        bus.stop()


def check_output(tmp_path: Path, http: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from ccbus.cli.app import cli
    from ccbus.plugins import PluginHost

    write(tmp_path / "rules" / "r.yaml", "rules: [{name: r, on: system.alert, do: [log: hi]}]\n")
    config = write(tmp_path / "ccbus.yaml", f"http: {http}\n")
    result = CliRunner().invoke(cli, ["check", "-c", str(config)],
                                obj={"plugins": PluginHost(autoload=False)})
    return result.exit_code, result.output


def test_check_warns_about_a_listener_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    cases = {'{listen: "0.0.0.0:8787"}': True,
             '{listen: "[::]:8787"}': True,
             '{listen: "ccbus.example.net:8787"}': True,
             '{listen: "0.0.0.0:8787", admin_token: "t0ken-value"}': False,
             '{listen: "127.0.0.1:8787"}': False,
             '{listen: "[::1]:8787"}': False}
    for http, warned in cases.items():
        code, out = check_output(tmp_path, http)
        assert code == 0, out
        assert ("http.admin_token is not set" in out) is warned, (http, out)
