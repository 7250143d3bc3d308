"""The live view in a real browser: Debian's headless Chromium against a running bus.

The page opens on the bus's listener, gets the backlog, then must show new
events, rule hits, a source's state change and a dead letter as they
happen; the type filter hides what does not match.  Clicking a rule hit
(a real mouse click) opens that rule's trace: its runs with the
condition's result, the verdict and each call's outcome as delivery
settles it.  A screenshot, trace panel open, is kept as a test artefact
(the path is printed; ``CCBUS_TEST_ARTIFACTS`` chooses the directory).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from chromium import Chromium
from support import free_port, write
from test_observability import Scripted

from ccbus import Event
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus
from ccbus.testing import Recorder

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ARTIFACTS = Path(os.environ.get("CCBUS_TEST_ARTIFACTS",
                                Path(tempfile.gettempdir()) / "ccbus-test-artifacts"))
VISIBLE_EVENTS = "[...document.querySelectorAll('tr.event')].filter(r => !r.hidden)"
TRACE_RUNS = "[...document.querySelectorAll('#trace-runs .run')]"


def make_bus(tmp_path: Path, config: str, plugin: Any, **kwargs: Any) -> Bus:
    """A bus over ``config`` with ``plugin`` (the scripted source) and a ``record`` action."""
    path = write(tmp_path / "ccbus.yaml", config)
    return Bus(load_config(path), PluginHost(autoload=False, extra=[plugin, Recorder()]),
               **kwargs)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def click(page: Chromium, selector: str) -> None:
    """Press and release the mouse over the middle of the element, as a user would."""
    x, y = await page.evaluate(f"""(() => {{
        const el = document.querySelector({json.dumps(selector)});
        el.scrollIntoView({{block: "center"}});
        const r = el.getBoundingClientRect();
        return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
    for kind in ("mousePressed", "mouseReleased"):
        await page.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                        clickCount=1)


async def run_texts(page: Chromium) -> list[dict[str, object]]:
    """What the trace panel shows of each run, newest first."""
    return await page.evaluate(f"""{TRACE_RUNS}.map(r => ({{
        event: r.dataset.event, selected: r.classList.contains('selected'),
        condition: r.querySelector('.condition').textContent,
        verdict: r.querySelector('.verdict').textContent,
        calls: [...r.querySelectorAll('.call')].map(c => c.textContent)}}))""")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_live_view_updates_in_real_time_in_headless_chromium(tmp_path: Path) -> None:
    port = free_port()
    write(tmp_path / "rules" / "r.yaml", """
        rules:
          - name: long-call
            on: call.ended
            if: duration > 60
            do: [record: "{duration}"]
          - name: broken-template
            on: agent.*
            do: [record: "{1 / 0}"]
    """)
    plugin = Scripted()
    bus = make_bus(tmp_path, f"""
        sources: {{pbx: {{plugin: scripted}}}}
        http: {{listen: "127.0.0.1:{port}", client_timeout: 1s}}
    """, plugin, persist_state=False)
    base = f"http://127.0.0.1:{port}"
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        await plugin.states.send("connected")
        async with httpx.AsyncClient() as client:
            page_html = await client.get(f"{base}/live", timeout=10)
        assert page_html.status_code == 200 and "EventSource" in page_html.text
        # before any page is open: the backlog
        for n in range(2):
            await bus.publish(Event(type="call.ended", source="pbx", id=f"early{n}",
                                    data={"duration": 30 + n}))

        async with Chromium(f"{base}/live") as page:
            await page.wait_for("document.getElementById('conn').textContent === 'live'")
            await page.wait_for(f"{VISIBLE_EVENTS}.length === 2")
            await wait_for(lambda: bus.live.subscribers == 1, timeout=30)
            # a quiet stream outlives the listener's client timeout (idle clients are cut off,
            # live streams are not): the page keeps its one connection
            await anyio.sleep(2.5)

            # now, live: events, a rule hit, a state change and a dead letter
            await bus.publish(Event(type="call.ended", source="pbx", id="live-call",
                                    data={"duration": 300}))
            await bus.publish(Event(type="agent.state_changed", source="pbx", id="live-agent",
                                    data={"state": "ready"}))
            await plugin.states.send("degraded")
            await page.wait_for(f"{VISIBLE_EVENTS}.length === 4")
            assert await page.evaluate("document.body.dataset.snapshots") == "1"
            await page.wait_for("document.querySelectorAll('tr.hit').length === 2")
            await page.wait_for("document.getElementById('dead-count').textContent === '1'")
            await page.wait_for(
                "document.querySelector('#source-rows tr[data-source=pbx] td:nth-child(2)')"
                ".textContent === 'degraded'")
            hits = await page.evaluate(
                "[...document.querySelectorAll('tr.hit')].map(r => r.dataset.rule)")
            assert hits == ["broken-template", "long-call"]  # newest first
            newest = await page.evaluate(f"{VISIBLE_EVENTS}[0].dataset.id")
            assert newest == "live-agent"
            dead = await page.evaluate("document.querySelector('tr.dead').textContent")
            assert "broken-template" in dead and "did not render" in dead

            # a rule hit opens the rule's trace: every run, the clicked one marked, and the
            # call's outcome once delivery settles it (the panel follows /traces/RULE)
            assert await page.evaluate("document.getElementById('trace').hidden") is True
            await click(page, "tr.hit[data-rule='long-call']")
            await page.wait_for(f"{TRACE_RUNS}.length === 3")
            assert await page.evaluate(
                "document.getElementById('trace-rule').textContent") == "long-call"
            await page.wait_for(f"{TRACE_RUNS}[0].querySelector('.call').dataset.outcome === 'ok'")
            runs = await run_texts(page)
            assert runs == [
                {"event": "live-call", "selected": True, "condition": "true",
                 "verdict": "fired", "calls": ['record {"value":300}: ok']},
                {"event": "early1", "selected": False, "condition": "false",
                 "verdict": "no match", "calls": []},
                {"event": "early0", "selected": False, "condition": "false",
                 "verdict": "no match", "calls": []},
            ], runs
            assert await page.evaluate("document.querySelector('tr.hit.selected').dataset.rule"
                                       ) == "long-call"

            await anyio.Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
            shot = await page.screenshot(ARTIFACTS / "live-view.png")
            print(f"live view screenshot: {shot}")
            assert shot.stat().st_size > 10_000

            # another rule: its failed call shows as a dead letter with the reason
            await click(page, "tr.hit[data-rule='broken-template']")
            await page.wait_for(f"{TRACE_RUNS}[0]?.dataset.event === 'live-agent'")
            [run] = await run_texts(page)
            assert run["condition"] == "(no condition)" and run["verdict"] == "fired", run
            [call] = run["calls"]  # type: ignore[misc]
            assert call.startswith("record: dead_letter (parameters did not render"), call
            await click(page, "#trace-close")
            await page.wait_for("document.getElementById('trace').hidden")

            # filter by type, as a user types it
            await page.evaluate("""(() => { const box = document.getElementById('f-type');
                box.value = 'agent.*'; box.dispatchEvent(new Event('input')); })()""")
            shown = await page.evaluate(f"{VISIBLE_EVENTS}.map(r => r.dataset.id)")
            assert shown == ["live-agent"]

        # a filter in the address: ?source= shows only that source's events
        async with Chromium(f"{base}/live?source=elsewhere") as page:
            await page.wait_for("document.getElementById('conn').textContent === 'live'")
            await page.wait_for("document.querySelectorAll('tr.event').length === 4")
            assert await page.evaluate(f"{VISIBLE_EVENTS}.length") == 0
            # the stored dead letter is counted once (snapshot), though the backlog shows it too
            await page.wait_for("document.querySelectorAll('tr.dead').length === 1")
            assert await page.evaluate("document.getElementById('dead-count').textContent") == "1"
        bus.stop()
