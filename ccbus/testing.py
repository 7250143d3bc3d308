"""Test parts for plugin authors: a real bus, a recording action, collected events.

ccbus installs this module as a pytest plugin (entry point ``pytest11``), so a
plugin's test suite gets three fixtures without importing anything:

``ccbus_bus``
    :func:`running_bus` with the test's ``tmp_path`` and ``ccbus_recorder``.
``ccbus_source``
    :func:`collecting_source` with the test's ``tmp_path``: one source, no bus.
``ccbus_recorder``
    a fresh :class:`Recorder` (action ``record``).

The same names can be imported for use outside pytest (benchmarks, scripts);
pytest itself stays optional, and nothing ``ccbus`` runs imports this module.

A test of a source through the whole bus::

    import ccbus_acme
    import pytest

    pytestmark = pytest.mark.anyio

    async def test_ended_calls_are_routed(ccbus_bus) -> None:
        async with ccbus_bus(
            sources={"pbx": {"plugin": "acme", "options": {"url": "http://127.0.0.1:9"}}},
            rules='''
                rules:
                  - name: ended
                    on: call.ended
                    do: [record: "{callId}"]
            ''',
            plugins=[ccbus_acme],
        ) as bus:
            event = await bus.collected.wait_for(lambda e: e.type == "call.ended")
            [call] = await bus.recorder.wait_count(1)
            assert call.value == event.data["callId"] and call.event is event
            assert bus.bad_input("bad_json") == 0 and bus.dead_letters() == []

Without ``rules``, one rule records every event (``bus.recorder.types()``).
Every wait takes a ``timeout`` and, when it runs out, fails the test with what
arrived so far.
"""

# Test waits take a `timeout` (what a failed test reports) and poll what the bus does:
# ruff: noqa: ASYNC109, ASYNC110
from __future__ import annotations

import logging
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import yaml
from pydantic import BaseModel, create_model

from ccbus.actions.api import ActionContext, ActionSpec
from ccbus.config.schema import Options
from ccbus.errors import RetryableActionError
from ccbus.events.envelope import Event
from ccbus.hookspecs import hookimpl
from ccbus.sources.api import SourceContext

if TYPE_CHECKING:
    from ccbus.delivery.store import DeadLetter
    from ccbus.runtime.bus import Bus

try:  # only the fixtures need pytest
    import pytest
except ModuleNotFoundError:  # pragma: no cover - exercised where pytest is not installed
    HAVE_PYTEST = False
else:
    HAVE_PYTEST = True

__all__ = [
    "DEFAULT_TIMEOUT",
    "FAST_DELIVERY",
    "BusHarness",
    "Call",
    "Collected",
    "Recorder",
    "collecting_source",
    "running_bus",
    "wait_until",
]

#: Seconds every wait gives by default before it fails the test.
DEFAULT_TIMEOUT = 10.0
#: Delivery settings :func:`running_bus` starts from: a failed call is retried in
#: tenths of a second, not seconds (``delivery=`` overrides any of them).
FAST_DELIVERY: dict[str, Any] = {"backoff_initial": 0.05, "backoff_cap": 0.5}
#: Seconds a stopping bus may take (its calls in flight finish first).
STOP_TIMEOUT = 30.0
#: How often waits look again.
POLL = 0.01
#: How many of the latest items a timeout message shows.
SHOWN = 10

T = TypeVar("T")


async def wait_until(
    predicate: Callable[[], object],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "the condition",
    detail: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` (and ``detail()``) on timeout.

    ::

        await wait_until(lambda: bus.state() == "connected", what="the source to connect")
    """
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(POLL)
        return
    extra = f"; {detail()}" if detail is not None else ""
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")


async def _wait_items(
    items: Sequence[T],
    n: int,
    predicate: Callable[[T], bool] | None,
    timeout: float,
    noun: str,
    describe: Callable[[T], str],
) -> list[T]:
    """The items matching ``predicate`` once there are at least ``n`` of them."""
    found: list[T] = []
    with anyio.move_on_after(timeout):
        while True:
            found = [i for i in items if predicate is None or predicate(i)]
            if len(found) >= n:
                return found
            await anyio.sleep(POLL)
    latest = ", ".join(describe(i) for i in items[-SHOWN:]) or "nothing"
    wanted = f"{n} {noun}(s)" if predicate is None else f"{n} matching {noun}(s)"
    raise AssertionError(
        f"timed out after {timeout:g}s waiting for {wanted}: got {len(found)} of "
        f"{len(items)} in all; the latest: {latest}"
    )


def _describe_event(event: Event) -> str:
    subject = f" subject={event.subject}" if event.subject else ""
    return f"{event.type}(id={event.id}{subject})"


# ---------------------------------------------------------------------------
# Collected events


class Collected:
    """Events in arrival order, and waits for them.

    :func:`running_bus` fills ``bus.collected`` with every event the bus routed
    (from its sources, from ``publish``, from rules' ``emit``), each once;
    duplicates it dropped are not in it, and the event a ``for:`` timer restored
    from an earlier bus held is, when the timer fires.

    :func:`collecting_source` fills it with what one source emitted, and then
    also sets ``source``, ``context``, ``states`` (each ``set_state``) and
    ``bad_input`` (``count_bad_input`` calls by reason)::

        async with collecting_source(tmp_path, "replay", {"path": "events.jsonl"}) as got:
            [first, second] = await got.wait_count(2)
            assert got.types() == ["x.A", "x.A"] and got.bad_input["bad_line"] == 1
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        #: The source object (:func:`collecting_source` only).
        self.source: Any = None
        #: The context the source was built with (:func:`collecting_source` only).
        self.context: SourceContext | None = None
        self.states: list[str] = []
        self.bad_input: Counter[str] = Counter()
        self._ids: set[int] = set()

    def add(self, event: Event) -> None:
        """Keep ``event`` (again only if it is a different object)."""
        if id(event) not in self._ids:  # a `for` timer firing routes its held event again
            self._ids.add(id(event))  # the list keeps the event alive: ids stay unique
            self.events.append(event)

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def of(self, event_type: str) -> list[Event]:
        """The events of one type."""
        return [e for e in self.events if e.type == event_type]

    async def wait_for(
        self, predicate: Callable[[Event], bool], *, timeout: float = DEFAULT_TIMEOUT
    ) -> Event:
        """The first event (already here or still to come) for which ``predicate`` is true."""
        return (await self.wait_count(1, predicate, timeout=timeout))[0]

    async def wait_count(
        self,
        n: int,
        predicate: Callable[[Event], bool] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Event]:
        """Wait for at least ``n`` events (matching ``predicate``); returns all that match."""
        return await _wait_items(self.events, n, predicate, timeout, "event", _describe_event)


# ---------------------------------------------------------------------------
# The recording action


@dataclass(frozen=True, slots=True)
class Call:
    """One attempt of a :class:`Recorder`'s action."""

    #: The rendered parameters (every declared one; ``None`` when the rule left it out).
    params: dict[str, Any]
    event: Event
    #: ``ctx.idempotency_key``: the same for every attempt of one call.
    key: str
    rule: str
    #: 1 for the first attempt, 2 for the first retry, ...
    attempt: int
    #: Why this attempt failed; empty when it succeeded.
    error: str = ""

    @property
    def value(self) -> Any:
        """The ``value`` parameter (what ``- record: "{x}"`` renders)."""
        return self.params.get("value")


class Recorder:
    """A plugin object whose action records each call: parameters, event, key, attempt.

    :param name: the action's name in rules.
    :param params: the parameters it takes, each optional and of any type; the
        first is the shorthand (``- record: "{callId}"`` sets ``value``).
    :param fail: how many attempts fail first (all calls counted together), each
        raising ``error`` (default: :class:`~ccbus.RetryableActionError`).

    ::

        recorder = Recorder(params=("type", "agent"), fail=2)
        async with running_bus(tmp_path, rules=RULES, recorder=recorder) as bus:
            [call] = await recorder.wait_count(1)
        assert call.attempt == 3 and len(recorder.attempts) == 3

    Pass it to :func:`running_bus` (``recorder=``; one is made otherwise) or, as
    any pluggy plugin object, in ``plugins=`` (a second one needs its own name).
    """

    def __init__(
        self,
        name: str = "record",
        *,
        params: Sequence[str] = ("value",),
        fail: int = 0,
        error: Exception | None = None,
    ) -> None:
        self.name = name
        self.fields = tuple(params)
        self.fail = fail
        self.error = error
        #: Successful calls, in the order they ran.
        self.calls: list[Call] = []
        #: Every attempt, failed ones included.
        self.attempts: list[Call] = []
        fields: dict[str, Any] = {f: (Any, None) for f in self.fields}
        self.model: type[BaseModel] = create_model(
            f"{name.replace('.', '_').replace('-', '_')}_params", __base__=Options, **fields
        )

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        return [
            ActionSpec(
                name=self.name,
                params=self.model,
                run=self._run,
                shorthand=self.fields[0] if self.fields else None,
                description="Record the call (ccbus.testing.Recorder).",
            )
        ]

    async def _run(self, params: BaseModel, ctx: ActionContext) -> None:
        failing = len(self.attempts) < self.fail
        error: Exception | None = None
        if failing:
            error = self.error or RetryableActionError(
                f"{self.name}: failing as told ({len(self.attempts) + 1} of {self.fail})"
            )
        call = Call(
            params=params.model_dump(),
            event=ctx.event,
            key=ctx.idempotency_key,
            rule=ctx.rule,
            attempt=ctx.attempt,
            error="" if error is None else f"{type(error).__name__}: {error}",
        )
        self.attempts.append(call)
        if error is not None:
            raise error
        self.calls.append(call)

    def values(self) -> list[Any]:
        """``call.value`` of each successful call."""
        return [c.value for c in self.calls]

    def types(self) -> list[str]:
        """The event type of each successful call."""
        return [c.event.type for c in self.calls]

    def of(self, event_type: str) -> list[Call]:
        """The successful calls for events of one type."""
        return [c for c in self.calls if c.event.type == event_type]

    async def wait_for(
        self, predicate: Callable[[Call], bool], *, timeout: float = DEFAULT_TIMEOUT
    ) -> Call:
        """The first successful call for which ``predicate`` is true."""
        return (await self.wait_count(1, predicate, timeout=timeout))[0]

    async def wait_count(
        self,
        n: int,
        predicate: Callable[[Call], bool] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Call]:
        """Wait for at least ``n`` successful calls (matching ``predicate``); returns them."""

        def describe(call: Call) -> str:
            return f"{call.event.type} {call.params}"

        return await _wait_items(self.calls, n, predicate, timeout, f"{self.name} call", describe)


# ---------------------------------------------------------------------------
# A running bus


class BusHarness:
    """A running :class:`~ccbus.runtime.bus.Bus`, as :func:`running_bus` yields it.

    ``bus`` is the bus itself, ``recorder`` the :class:`Recorder`, ``collected``
    every event routed (:class:`Collected`), ``rules_file`` the file the rules
    were written to (write it again to test a reload).
    """

    def __init__(
        self, bus: Bus, recorder: Recorder, collected: Collected, tmp_path: Path, rules_file: Path
    ) -> None:
        self.bus = bus
        self.recorder = recorder
        self.collected = collected
        self.tmp_path = tmp_path
        self.rules_file = rules_file

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the listener (``running_bus(listen=...)``)."""
        if self.bus.http_port is None:
            raise RuntimeError("the bus has no HTTP listener: pass listen='127.0.0.1:0'")
        return f"http://127.0.0.1:{self.bus.http_port}"

    def _name(self, name: str | None) -> str:
        if name is not None:
            return name
        if len(self.bus.sources) != 1:
            raise ValueError(f"name one of the sources: {sorted(self.bus.sources)}")
        return next(iter(self.bus.sources))

    def source(self, name: str | None = None) -> Any:
        """The source object called ``name`` (the only one if not given)."""
        return self.bus.sources[self._name(name)].source

    def state(self, name: str | None = None) -> str:
        """What the source called ``name`` (the only one if not given) says it is doing."""
        return self.bus.sources[self._name(name)].state

    async def publish(self, event: Event | str, /, **data: Any) -> Event:
        """Route ``event`` (or a new event of that type, source ``test``, with ``data``)."""
        if isinstance(event, str):
            event = Event(type=event, source="test", data=data)
        await self.bus.publish(event)
        return event

    def counter(self, name: str, **labels: str) -> float:
        """One series of the bus's counters (``ccbus_<name>_total`` in ``/metrics``)."""
        return self.bus.counters.get(name, **labels)

    def bad_input(self, reason: str, source: str | None = None) -> float:
        """Inputs the source (the only one if not given) refused for ``reason``."""
        return self.counter("source_bad_input", source=self._name(source), reason=reason)

    def dead_letters(self) -> list[DeadLetter]:
        """The calls given up on, oldest first (outbox on or off)."""
        from ccbus.delivery.store import MemoryDeliveryStore, SqliteDeliveryStore

        store = self.bus.delivery_store
        if isinstance(store, MemoryDeliveryStore):
            return list(store.dead)
        return cast(SqliteDeliveryStore, store).dead_letters()

    def describe(self) -> str:
        """Sources, events and calls so far: what a failed wait reports."""
        states = ", ".join(f"{n}={r.state}" for n, r in self.bus.sources.items()) or "none"
        latest = ", ".join(_describe_event(e) for e in self.collected.events[-SHOWN:])
        return (
            f"sources: {states}; {len(self.collected.events)} event(s) "
            f"(latest: {latest or 'none'}); {len(self.recorder.calls)} {self.recorder.name} "
            f"call(s), {len(self.recorder.attempts) - len(self.recorder.calls)} failed"
        )

    async def wait_until(
        self,
        predicate: Callable[[], object],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        what: str = "the condition",
    ) -> None:
        """:func:`wait_until`, failing with :meth:`describe`."""
        await wait_until(predicate, timeout=timeout, what=what, detail=self.describe)

    async def sources_finished(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until every source's ``run()`` returned (a replay reached its end)."""
        await self.wait_until(
            lambda: all(r.finished.is_set() for r in self.bus.sources.values()),
            timeout=timeout,
            what="every source to finish",
        )


def _rules_document(rules: str | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    if isinstance(rules, str):
        return textwrap.dedent(rules).lstrip("\n")
    document = dict(rules) if isinstance(rules, Mapping) else {"rules": list(rules)}
    return yaml.safe_dump(document, sort_keys=False)


@asynccontextmanager
async def running_bus(
    tmp_path: Path,
    *,
    sources: Mapping[str, Mapping[str, Any]] | None = None,
    rules: str | Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    plugins: Sequence[object] = (),
    recorder: Recorder | None = None,
    outbox: bool = False,
    delivery: Mapping[str, Any] | None = None,
    listen: str | None = None,
    config: Mapping[str, Any] | None = None,
    persist_state: bool = False,
    watch_rules: bool = False,
    handle_signals: bool = False,
    autoload: bool = False,
    timeout: float = 30.0,
) -> AsyncIterator[BusHarness]:
    """Run a real bus from a config written to ``tmp_path/ccbus.yaml``; stop it on exit.

    :param sources: the config's ``sources:`` (``{"pbx": {"plugin": "acme",
        "options": {...}}}``).
    :param rules: YAML text (dedented), a ``{"rules": [...]}`` mapping or a list of
        rules, written to ``tmp_path/rules/test.yaml``; by default one rule sends every
        event to the recorder.
    :param plugins: plugin modules or objects to load (the plugin under test);
        installed plugins are not loaded unless ``autoload``.
    :param recorder: the :class:`Recorder` to register (a new one by default).
    :param outbox: ``delivery.outbox``: the SQLite outbox in ``tmp_path/state``, or memory.
    :param delivery: more of ``delivery:``, over :data:`FAST_DELIVERY`.
    :param listen: the HTTP listener's address (``"127.0.0.1:0"``: any free port,
        see ``BusHarness.url``); none by default.
    :param config: any other top-level config keys (``traces``, ``targets``...).
    :param persist_state: keep rule state in ``tmp_path/state`` across buses.
    :param timeout: seconds the bus may take to start.

    Plugins or rules that do not load raise :class:`ValueError` here (rules with
    file and line).

    The block runs once the bus started (every source's ``run()`` began); on
    exit the bus stops as on SIGTERM: sources and timers stop, queued calls
    finish.  A bus that fails to start raises here.

    ::

        async with running_bus(tmp_path, sources={"in": {"plugin": "webhook"}},
                               rules="rules: [{name: r, on: 'crm.*', do: [record: '{id}']}]",
                               listen="127.0.0.1:0") as bus:
            async with httpx.AsyncClient() as client:
                await client.post(f"{bus.url}/events/in", json={"type": "crm.A", "data": {"id": 1}})
            assert (await bus.recorder.wait_count(1))[0].value == 1
    """
    from ccbus.config.file import load_config
    from ccbus.plugins import PluginHost
    from ccbus.runtime.bus import Bus

    recorder = recorder if recorder is not None else Recorder()
    if rules is None:
        rules = [{"name": "record-everything", "on": "*", "do": [{recorder.name: None}]}]
    rules_file = tmp_path / "rules" / "test.yaml"
    rules_file.parent.mkdir(parents=True, exist_ok=True)
    rules_file.write_text(_rules_document(rules), encoding="utf-8")
    document: dict[str, Any] = {
        "sources": {name: dict(source) for name, source in (sources or {}).items()},
        "rules": ["rules"],
        "state_dir": "state",
        "http": {"listen": listen} if listen else {"enabled": False},
        "delivery": {**FAST_DELIVERY, "outbox": outbox, **(delivery or {})},
        **(config or {}),
    }
    path = tmp_path / "ccbus.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    collected = Collected()
    host = PluginHost(autoload=autoload, extra=[*plugins, recorder])
    bus = Bus(
        load_config(path),
        host,
        persist_state=persist_state,
        observer=lambda event, firings, calls: collected.add(event),
    )
    broken = [f"{f.name}: {f.error}" for f in host.failures] + host.problems
    if broken:
        raise ValueError("plugins did not load: " + "; ".join(broken))
    if bus.ruleset.errors:
        raise ValueError("the rules did not load: " + "; ".join(map(str, bus.ruleset.errors)))
    stopped = anyio.Event()

    async def run() -> None:
        try:
            await bus.run(watch_rules=watch_rules, handle_signals=handle_signals)
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(timeout):
            await bus.started.wait()
        try:
            yield BusHarness(bus, recorder, collected, tmp_path, rules_file)
        finally:
            # stopped, not cancelled, even when the test failed: a cancelled bus
            # would bury the test's own error under its listener's and outbox's
            bus.stop()
            with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_TIMEOUT):
                await stopped.wait()


# ---------------------------------------------------------------------------
# One source, no bus


@asynccontextmanager
async def collecting_source(
    tmp_path: Path,
    plugin: str,
    options: Mapping[str, Any] | None = None,
    *,
    plugins: Sequence[object] = (),
    name: str | None = None,
    emit: Callable[[Event], Awaitable[None]] | None = None,
) -> AsyncIterator[Collected]:
    """Run one source of kind ``plugin`` with a context whose ``emit`` collects.

    :param options: the source's ``options:``, validated by its model.
    :param plugins: the plugin providing ``plugin`` (built-ins need none).
    :param name: the source's name (default: ``plugin``); its state directory is
        ``tmp_path/state/sources/<name>``, as under a bus.
    :param emit: awaited with each event before it is collected (a slow consumer).

    The source's ``run()`` is a task: an exception from it fails the block; on
    exit it is cancelled.  Nothing restarts it (that is the bus's job).

    ::

        async with collecting_source(tmp_path, "acme", {"every": 0}, plugins=[ccbus_acme]) as got:
            await got.wait_count(2)
            assert got.states[-1] == "connected"
    """
    from ccbus.plugins import PluginHost

    host = PluginHost(autoload=False, extra=list(plugins))
    spec = host.source(plugin)
    name = name or plugin
    collected = Collected()

    async def collect(event: Event) -> None:
        if emit is not None:
            await emit(event)
        collected.add(event)

    def count_bad_input(reason: str, amount: int = 1) -> None:
        collected.bad_input[reason] += amount

    context = SourceContext(
        name=name,
        options=spec.options.model_validate(dict(options or {})),
        emit=collect,
        log=logging.getLogger(f"ccbus.source.{name}"),
        state_dir=tmp_path / "state" / "sources" / name,
        config_dir=tmp_path,
        set_state=collected.states.append,
        count_bad_input=count_bad_input,
    )
    context.state_dir.mkdir(parents=True, exist_ok=True)
    collected.context = context
    collected.source = spec.factory(context)
    async with anyio.create_task_group() as tg:
        tg.start_soon(collected.source.run)
        try:
            yield collected
        finally:
            tg.cancel_scope.cancel()


# ---------------------------------------------------------------------------
# The pytest plugin

if HAVE_PYTEST:

    @pytest.fixture
    def ccbus_recorder() -> Recorder:
        """A fresh :class:`Recorder` (action ``record``); ``ccbus_bus`` registers it."""
        return Recorder()

    @pytest.fixture
    def ccbus_bus(
        tmp_path: Path, ccbus_recorder: Recorder
    ) -> Callable[..., AbstractAsyncContextManager[BusHarness]]:
        """``async with ccbus_bus(sources=..., rules=..., plugins=[...]) as bus``:
        :func:`running_bus` in this test's ``tmp_path``, recording with ``ccbus_recorder``."""
        return partial(running_bus, tmp_path, recorder=ccbus_recorder)

    @pytest.fixture
    def ccbus_source(tmp_path: Path) -> Callable[..., AbstractAsyncContextManager[Collected]]:
        """``async with ccbus_source("acme", {...}, plugins=[ccbus_acme]) as got``:
        :func:`collecting_source` in this test's ``tmp_path``."""
        return partial(collecting_source, tmp_path)
