"""One test per hook, named ``test_hook_<name>``: a plugin implements it and its effect shows.

Each plugin here is registered on a real :class:`~ccbus.plugins.PluginHost`
and imports only public names from ``ccbus``, as a third party's would; a hook
that acts at run time is driven through a real bus or the real CLI, so each
test fails if its hook is never called.  ``tests/test_plugins.py`` checks that
every hook in ``ccbus/hookspecs.py`` has a test here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import click
import pytest
from click.testing import CliRunner
from support import write

from ccbus import (
    ActionContext,
    ActionSpec,
    BusView,
    DemoSource,
    Event,
    LoadedConfig,
    Options,
    RefusedInput,
    SourceContext,
    SourceSpec,
    decode_json,
    hookimpl,
)
from ccbus.cli.app import attach_plugins, cli
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """Action ``record``: keeps the value of every call, so a test sees what rules did."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        class Params(Options):
            value: Any = None

        async def run(params: Params, ctx: ActionContext) -> None:
            self.values.append(params.value)

        return [ActionSpec(name="record", params=Params, run=run, shorthand="value")]


def make_bus(tmp_path: Path, *plugins: object, rules: str, sources: str = "{}") -> Bus:
    """A real bus (no HTTP, no saved state) with ``plugins`` besides the built-ins."""
    write(tmp_path / "rules" / "r.yaml", rules)
    config = write(tmp_path / "ccbus.yaml", f"http: {{enabled: false}}\nsources: {sources}\n")
    host = PluginHost(autoload=False, extra=list(plugins))
    assert host.problems == [] and host.failures == []
    return Bus(load_config(config), host, persist_state=False)


async def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def publish_and_wait(bus: Bus, events: list[Event], done: Callable[[], object]) -> None:
    """Run ``bus``, publish ``events``, wait until ``done()``, stop the bus."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        for event in events:
            await bus.publish(event)
        await wait_for(done)
        bus.stop()


# ---------------------------------------------------------------------------
# Registration


class FeedOptions(Options):
    messages: list[str]


class Feed:
    """A source reading ``messages``: each is decoded inside ``ctx.convert``."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx

    def _decode(self, raw: str) -> dict[str, Any]:
        data = decode_json(raw)
        if "n" not in data:
            raise RefusedInput("no_n", "the message has no 'n'")
        return dict(data)

    async def run(self) -> None:
        self.ctx.set_state("connected")
        await self.ctx.refuse("bad_signature", "signature does not match", b"forged")
        for raw in self.ctx.options.messages:
            data = await self.ctx.convert(raw, lambda raw=raw: self._decode(raw), offset=7)
            if data is not None:
                await self.ctx.emit(Event(type="feed.message", source=self.ctx.name, data=data))
        await anyio.sleep_forever()


class FeedPlugin:
    @hookimpl
    def register_sources(self) -> list[SourceSpec]:
        return [SourceSpec(name="hook-feed", options=FeedOptions, factory=Feed,
                           description="Messages from its options.")]


@pytest.mark.anyio
async def test_hook_register_sources(tmp_path: Path) -> None:
    recorder = Recorder()
    messages = ['{"n": 1}', "not json", '{"m": 2}', '{"n": 3}']
    bus = make_bus(tmp_path, FeedPlugin(), recorder,
                   rules="rules: [{name: r, on: feed.message, do: [record: '{n}']}]\n",
                   sources=json.dumps({"feed": {"plugin": "hook-feed",
                                                "options": {"messages": messages}}}))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await wait_for(lambda: len(recorder.values) == 2)
        bus.stop()
    assert [str(v) for v in recorder.values] == ["1", "3"]  # emitted, routed, acted on
    assert bus.sources["feed"].state == "connected"  # ctx.set_state
    refused = {reason: bus.counters.get("source_bad_input", source="feed", reason=reason)
               for reason in ("bad_signature", "unreadable", "no_n")}
    assert refused == {"bad_signature": 1, "unreadable": 1, "no_n": 1}
    dead = tmp_path / "state" / "sources" / "feed" / "dead-letters.jsonl"
    records = [json.loads(line) for line in dead.read_text(encoding="utf-8").splitlines()]
    assert [(r["reason"], r["message"]) for r in records] == [
        ("bad_signature", "forged"), ("unreadable", "not json"), ("no_n", '{"m": 2}')]
    assert records[1]["offset"] == 7


class PagerPlugin:
    def __init__(self) -> None:
        self.pages: list[tuple[str, str, str, str]] = []

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        class PageParams(Options):
            to: str
            text: str

        async def page(params: PageParams, ctx: ActionContext) -> dict[str, str]:
            self.pages.append((params.to, params.text, ctx.rule, ctx.event.type))
            return {"pageId": f"p-{len(self.pages)}"}

        return [ActionSpec(name="hook.page", params=PageParams, run=page)]


@pytest.mark.anyio
async def test_hook_register_actions(tmp_path: Path) -> None:
    pager, recorder = PagerPlugin(), Recorder()
    bus = make_bus(tmp_path, pager, recorder, rules="""
        rules:
          - name: page-oncall
            on: call.abandoned
            do:
              - hook.page: {to: oncall, text: "call {callId} abandoned"}
              - record: "{previous.pageId}"
    """)
    await publish_and_wait(bus, [Event(type="call.abandoned", source="t",
                                       data={"callId": "c-9"})], lambda: recorder.values)
    assert pager.pages == [("oncall", "call c-9 abandoned", "page-oncall", "call.abandoned")]
    assert recorder.values == ["p-1"]  # what the action returned is the next one's `previous`


class ShoutPlugin:
    @hookimpl
    def register_functions(self) -> dict[str, Callable[..., Any]]:
        def shout(text: object) -> str:
            """The text in capitals."""
            return str(text).upper()

        return {"shout": shout}


@pytest.mark.anyio
async def test_hook_register_functions(tmp_path: Path) -> None:
    recorder = Recorder()
    bus = make_bus(tmp_path, ShoutPlugin(), recorder, rules="""
        rules:
          - name: vip
            on: call.queued
            if: shout(queue) == "VIP"
            do: [record: "{shout(caller)}"]
    """)
    events = [Event(type="call.queued", source="t", data={"queue": q, "caller": c})
              for q, c in (("other", "nobody"), ("vip", "ada"), ("vip", "bob"))]
    await publish_and_wait(bus, events, lambda: len(recorder.values) == 2)
    assert recorder.values == ["ADA", "BOB"]  # in the condition and in the template


class SimulatorPlugin:
    @hookimpl
    def register_simulators(self) -> list[click.Command]:
        @click.command(name="hook-sim")
        @click.option("--calls", default=10)
        def simulate_it(calls: int) -> None:
            """Play the vendor's side."""
            click.echo(f"simulated {calls} calls")

        return [simulate_it]


def test_hook_register_simulators() -> None:
    host = PluginHost(autoload=False, extra=[SimulatorPlugin()])
    attach_plugins(host)
    result = CliRunner().invoke(cli, ["simulate", "hook-sim", "--calls", "3"],
                                obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert result.output == "simulated 3 calls\n"


class DemoPlugin:
    """A source plugin offering itself to ``ccbus demo``, with a simulator that sets its option."""

    def __init__(self) -> None:
        self.simulator_ran = False

    @hookimpl
    def register_sources(self) -> list[SourceSpec]:
        class LiveOptions(Options):
            agent: str = "unset"

        class Live:
            def __init__(self, ctx: SourceContext) -> None:
                self.ctx = ctx

            async def run(self) -> None:
                await self.ctx.emit(Event(type="agent.state_changed", source=self.ctx.name,
                                          data={"agentId": self.ctx.options.agent,
                                                "state": "available"}))
                await anyio.sleep_forever()

        return [SourceSpec(name="hook-live", options=LiveOptions, factory=Live)]

    @hookimpl
    def register_demo_sources(self) -> list[DemoSource]:
        @contextlib.asynccontextmanager
        async def simulator() -> AsyncIterator[dict[str, str]]:
            self.simulator_ran = True
            yield {"agent": "from-the-hook-simulator"}

        return [DemoSource(name="hook-live-demo", plugin="hook-live", options={},
                           simulator=simulator)]


def test_hook_register_demo_sources() -> None:
    plugin = DemoPlugin()
    host = PluginHost(autoload=False, extra=[plugin])
    result = CliRunner().invoke(cli, ["demo", "--live-seconds", "0.3"], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert "hook-live-demo (hook-live)" in result.output
    assert plugin.simulator_ran
    assert "agent from-the-hook-simulator: available" in result.output


class CommandsPlugin:
    def __init__(self) -> None:
        self.given: list[click.Group] = []

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        self.given.append(cli)

        @cli.group(name="hook-tool")
        def tool() -> None:
            """A plugin's own commands."""

        @tool.command()
        @click.argument("name")
        def status(name: str) -> None:
            click.echo(f"{name} is fine")


def test_hook_register_commands() -> None:
    plugin = CommandsPlugin()
    host = PluginHost(autoload=False, extra=[plugin])
    attach_plugins(host)
    assert plugin.given == [cli]
    result = CliRunner().invoke(cli, ["hook-tool", "status", "pbx"], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert result.output == "pbx is fine\n"


# ---------------------------------------------------------------------------
# Checks and lifecycle


class PbxOptions(Options):
    url: str


class CheckingPlugin:
    """Source ``hook-pbx``, whose URL this plugin's ``check_config`` wants on https."""

    def __init__(self) -> None:
        self.seen: list[LoadedConfig] = []

    @hookimpl
    def register_sources(self) -> list[SourceSpec]:
        return [SourceSpec(name="hook-pbx", options=PbxOptions, factory=OneEvent)]

    @hookimpl
    def check_config(self, config: LoadedConfig) -> list[str]:
        self.seen.append(config)
        return [
            f"{config.where('sources', name, 'options', 'url')}: sources.{name}.options.url: "
            "the PBX wants https"
            for name, source in config.config.sources.items()
            if source.plugin == "hook-pbx" and not source.options["url"].startswith("https:")
        ]


def test_hook_check_config(tmp_path: Path) -> None:
    write(tmp_path / "rules" / "r.yaml", "rules: [{name: r, on: system.alert, do: [log: hi]}]\n")
    good = write(tmp_path / "good.yaml", """
        sources:
          pbx: {plugin: hook-pbx, options: {url: "https://pbx"}}
    """)
    bad = write(tmp_path / "bad.yaml", """
        http: {enabled: false}
        sources:
          pbx:
            plugin: hook-pbx
            options:
              url: http://pbx
    """)
    plugin = CheckingPlugin()
    host = PluginHost(autoload=False, extra=[plugin])
    runner = CliRunner()

    result = runner.invoke(cli, ["check", "-c", str(good)], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert [c.path for c in plugin.seen] == [good]
    assert isinstance(plugin.seen[0], LoadedConfig)

    result = runner.invoke(cli, ["check", "-c", str(bad)], obj={"plugins": host})
    assert result.exit_code == 1, result.output
    assert "sources.pbx.options.url: the PBX wants https" in result.output
    assert f"{bad}:6:" in result.output  # file and line of the key
    result = runner.invoke(cli, ["run", "-c", str(bad)], obj={"plugins": host})
    assert result.exit_code == 1, result.output  # refused before any source started
    assert "sources.pbx.options.url: the PBX wants https" in result.output
    assert [c.path for c in plugin.seen] == [good, bad, bad]


class OneEvent:
    """A source that emits one event and finishes."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        await self.ctx.emit(Event(type="one.event", source=self.ctx.name))


class Lifecycle:
    """Source ``hook-one`` and whatever the lifecycle hooks saw of the bus."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def register_sources(self) -> list[SourceSpec]:
        return [SourceSpec(name="hook-one", options=Options, factory=OneEvent)]


class StartupPlugin(Lifecycle):
    @hookimpl
    def startup(self, bus: BusView) -> None:
        self.seen.append((bus.rule_names(), bus.started.is_set(),
                          {name: s.plugin for name, s in bus.sources.items()}))


class ShutdownPlugin(Lifecycle):
    @hookimpl
    async def shutdown(self, bus: BusView) -> None:
        await anyio.lowlevel.checkpoint()  # a coroutine: the bus awaits it
        self.seen.append((await bus.outbox_counts(), bus.counters.total("events_in")))


RULES = "rules: [{name: one, on: one.event, do: [record: got it]}]\n"


@pytest.mark.anyio
async def test_hook_startup(tmp_path: Path) -> None:
    plugin, recorder = StartupPlugin(), Recorder()
    bus = make_bus(tmp_path, plugin, recorder, rules=RULES,
                   sources="{one: {plugin: hook-one}}")
    await bus.run(until_sources_finish=True, watch_rules=False)
    # called once, configured (rules and sources there) but before sources started
    assert plugin.seen == [(["one"], False, {"one": "hook-one"})]
    assert recorder.values == ["got it"]


@pytest.mark.anyio
async def test_hook_shutdown(tmp_path: Path) -> None:
    plugin, recorder = ShutdownPlugin(), Recorder()
    bus = make_bus(tmp_path, plugin, recorder, rules=RULES,
                   sources="{one: {plugin: hook-one}}")
    await bus.run(until_sources_finish=True, watch_rules=False)
    # called once, after the source finished and its action ran: nothing left in the outbox
    assert plugin.seen == [((0, 0), 1.0)]
    assert recorder.values == ["got it"]


class EventTypesPlugin:
    @hookimpl
    def register_event_types(self) -> dict[str, list[str] | None]:
        return {"hookacme.CallEnded": ["callId", "queue"], "hookacme.Custom*": None}


def test_hook_register_event_types(tmp_path: Path) -> None:
    write(tmp_path / "rules" / "r.yaml", """
        rules:
          - name: declared
            on: hookacme.CallEnded
            if: queue == "sales"
            do: [log: "{callId}"]
          - name: dynamic
            on: hookacme.CustomAlarm
            do: [log: x]
          - name: typo
            on: hookacme.CallEndd
            do: [log: x]
          - name: field-typo
            on: hookacme.CallEnded
            if: queu == "sales"
            do: [log: x]
    """)
    host = PluginHost(autoload=False, extra=[EventTypesPlugin()])
    assert host.event_types()["hookacme.CallEnded"] == frozenset({"callId", "queue"})
    result = CliRunner().invoke(cli, ["check", "--rules", str(tmp_path / "rules")],
                                obj={"plugins": host})
    assert result.exit_code == 1, result.output
    assert "rule 'typo': on: 'hookacme.CallEndd' matches no event type" in result.output
    assert "did you mean 'hookacme.CallEnded'?" in result.output
    assert "rule 'declared'" not in result.output and "rule 'dynamic'" not in result.output
    assert ("rule 'field-typo' reads 'queu', a field none of its event types declares "
            "(did you mean 'queue'?)") in result.output
    assert "1 problem(s) found" in result.output
