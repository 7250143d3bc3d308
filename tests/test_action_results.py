"""A rule's later actions see the result of the action before them as ``previous``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from support import write

from ccbus import ActionSpec, Event, Options, hookimpl
from ccbus.config.file import load_config
from ccbus.errors import PermanentActionError
from ccbus.plugins import PluginHost
from ccbus.rules.loader import load_rules
from ccbus.runtime.bus import Bus

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Dialer:
    """``dial`` returns a new connection id (or fails as told); ``note`` records what it got."""

    def __init__(self) -> None:
        self.notes: list[dict[str, str]] = []
        self.dialed: list[str] = []
        self.refuse: set[str] = set()

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        dialer = self

        class DialParams(Options):
            number: str

        class NoteParams(Options):
            text: str
            number: str = ""

        async def dial(params: DialParams, ctx: Any) -> dict[str, Any]:
            if params.number in dialer.refuse:
                raise PermanentActionError(f"{params.number} refused")
            await anyio.sleep(0.01)  # the answer takes a moment: later calls must wait for it
            dialer.dialed.append(params.number)
            return {"connectionId": f"conn-{params.number}", "state": "INITIATED"}

        async def note(params: NoteParams, ctx: Any) -> None:
            dialer.notes.append({"text": params.text, "number": params.number,
                                 "key": ctx.idempotency_key})

        return [ActionSpec(name="dial", params=DialParams, run=dial),
                ActionSpec(name="note", params=NoteParams, run=note)]


RULES = """
rules:
  - name: call-back
    on: t.abandoned
    do:
      - note: {text: "dialling {caller}"}
      - dial: {number: "{caller}"}
      - note: {text: "{previous.connectionId} is {previous.state}", number: "{caller}"}
      - note: {text: "same stage as the one before", number: "{caller}"}
"""

CONFIG = """
http: {enabled: false}
state_dir: state
delivery: {outbox: OUTBOX, backoff_initial: 0.05, backoff_cap: 0.1}
"""


async def run_bus(tmp_path: Path, dialer: Dialer, events: list[Event], *, outbox: bool,
                  expect_notes: int) -> Bus:
    write(tmp_path / "rules" / "r.yaml", RULES)
    config = write(tmp_path / "ccbus.yaml", CONFIG.replace("OUTBOX", str(outbox).lower()))
    bus = Bus(load_config(config), PluginHost(autoload=False, extra=[dialer]))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        for event in events:
            await bus.publish(event)
        with anyio.fail_after(10):
            while len(dialer.notes) < expect_notes:  # noqa: ASYNC110 - the action's record
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)  # nothing more arrives
        bus.stop()
    return bus


def abandoned(caller: str) -> Event:
    return Event(type="t.abandoned", source="test", data={"caller": caller})


@pytest.mark.parametrize("outbox", [True, False])
async def test_an_action_sees_the_result_of_the_one_before(tmp_path: Path, outbox: bool) -> None:
    dialer = Dialer()
    await run_bus(tmp_path, dialer, [abandoned("555"), abandoned("777")], outbox=outbox,
                  expect_notes=6)
    results = sorted(n["text"] for n in dialer.notes if n["number"])
    assert results == [
        "conn-555 is INITIATED",
        "conn-777 is INITIATED",
        "same stage as the one before",
        "same stage as the one before",
    ]
    # each waiting call keeps its own idempotency key: event id, rule, its index
    assert {n["key"].rsplit(":", 1)[1] for n in dialer.notes if n["number"]} == {"2", "3"}


async def test_when_the_action_before_fails_the_waiting_calls_do_not_run(tmp_path: Path) -> None:
    dialer = Dialer()
    dialer.refuse.add("666")
    bus = await run_bus(tmp_path, dialer, [abandoned("666"), abandoned("555")], outbox=True,
                        expect_notes=4)
    assert [n["text"] for n in dialer.notes if n["number"] == "666"] == []
    assert bus.delivery_store.dead_count() == 1


async def test_a_result_without_the_field_a_template_reads_is_a_dead_letter(
    tmp_path: Path,
) -> None:
    dialer = Dialer()
    write(tmp_path / "rules" / "r.yaml", """
        rules:
          - name: call-back
            on: t.abandoned
            do:
              - dial: {number: "{caller}"}
              - note: {text: "{previous.noSuchField}"}
              - note: {text: "still runs", number: "{caller}"}
        """)
    config = write(tmp_path / "ccbus.yaml", CONFIG.replace("OUTBOX", "true"))
    bus = Bus(load_config(config), PluginHost(autoload=False, extra=[dialer]))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        await bus.publish(abandoned("555"))
        with anyio.fail_after(10):
            while not dialer.notes:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        bus.stop()
    assert [n["text"] for n in dialer.notes] == ["still runs"]
    (letter,) = bus.delivery_store.dead_letters()
    assert letter.rule == "call-back" and letter.action == "note"
    assert "noSuchField" in letter.reason


def test_previous_in_the_first_action_is_refused_with_file_and_line(tmp_path: Path) -> None:
    dialer = Dialer()
    path = write(tmp_path / "rules" / "r.yaml", """
        rules:
          - name: too-early
            on: t.x
            do:
              - note: {text: "{previous.connectionId}"}
        """)
    host = PluginHost(autoload=False, extra=[dialer])
    from ccbus.rules.functions import SystemClock
    from ccbus.runtime.bus import make_compiler

    loaded = load_rules([path.parent], actions=host.actions,
                        compiler=make_compiler(host, SystemClock()))
    (rule_file,) = loaded.files
    (error,) = rule_file.errors
    assert f"{path}:5" in str(error)
    assert "'previous' is the result of the action before" in str(error)


async def test_a_webhook_answer_feeds_the_next_webhook(tmp_path: Path) -> None:
    """Create a ticket, then post a comment to the ticket the answer named: a real
    HTTP server both times."""
    from http_receiver import HttpReceiver

    with HttpReceiver() as crm:
        crm.respond(201, b'{"ticket": {"id": "T-42"}}', path="/tickets")
        write(tmp_path / "rules" / "r.yaml", f"""
            rules:
              - name: ticket-then-comment
                on: t.abandoned
                do:
                  - webhook: {{url: "{crm.url_for('/tickets')}", json: {{caller: "{{caller}}"}}}}
                  - webhook:
                      url: "{crm.url_for('/comments')}"
                      json: {{ticket: "{{previous.json.ticket.id}}", status: "{{previous.status}}"}}
            """)
        config = write(tmp_path / "ccbus.yaml", CONFIG.replace("OUTBOX", "true"))
        bus = Bus(load_config(config), PluginHost(autoload=False))
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: bus.run(watch_rules=False))
            await bus.started.wait()
            await bus.publish(abandoned("555"))
            first, second = await crm.wait_for_async(2, timeout=10)
            bus.stop()
    assert first.path == "/tickets" and first.json() == {"caller": "555"}
    assert second.path == "/comments" and second.json() == {"ticket": "T-42", "status": 201}
