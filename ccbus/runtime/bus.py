"""The running bus: it wires the stages of ``ccbus/`` together, in the order data flows.

::

    sources/ ──ctx.emit──▶ pipeline.py ───────▶ delivery/ ─────────▶ actions/
    api, webhook,          dedup window,         outbox (SQLite),      api, webhook,
    replay, plugins;       rules/ engine:        dispatcher lanes,     notify, emit,
    convert() refuses      index, conditions,    retries, dead         log, plugins
    what it cannot read    gates, for: timers    letters
      ▲                    records.py: what the stages hand each other
      └── restarted with backoff (sources/backoff.py)

    observe/ reads a BusView (view.py) of all this: logs, metrics, traces, health, the
    live view and the HTTP listener; runtime/service.py handles signals and systemd.

* ``emit`` returns once the event's actions are recorded, and the queues are
  bounded, so a slow action slows its sources down (back-pressure) instead
  of growing memory.
* Routing is synchronous, so a rule reload (file change or SIGHUP) swaps
  the rule set between two events: none is dropped or routed twice.
* A source whose ``run()`` raises is restarted after a jittered, growing
  delay, forever; one that returns has finished (a replay at its end).
* SIGTERM/SIGINT stop the sources, let queued actions finish (up to
  ``drain_timeout``), save rule state and call the ``shutdown`` hooks;
  signals, reload and systemd notifications live in :mod:`ccbus.runtime.service`.
* A full state directory is an outage, not a crash (:mod:`ccbus.delivery.outage`):
  ``emit`` waits, ``/readyz`` says why, a probe resumes the bus when space returns.
* One bus per state directory: ``run()`` holds a lock on it for its life
  (:mod:`ccbus.runtime.lock`), so a second ``ccbus run`` there is refused
  instead of delivering every call a second time.
* What the bus sees is also recorded for people: counters and a latency
  histogram (``/metrics``), each rule's last runs (:mod:`ccbus.observe.traces`) and
  the live view's feed (:mod:`ccbus.observe.live`).
"""

from __future__ import annotations

import gc
import json
import logging
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from ccbus.actions.api import ActionContext
from ccbus.actions.http_sessions import HttpClients
from ccbus.config.file import LoadedConfig
from ccbus.config.secrets import SecretBook
from ccbus.delivery.dispatcher import Dispatcher
from ccbus.delivery.outage import PROBE_INTERVAL, StorageOutage, low_space, storage_error
from ccbus.delivery.store import (
    DeliveryStore,
    MemoryDeliveryStore,
    Pending,
    SqliteDeliveryStore,
    StateDirError,
)
from ccbus.errors import NotLeading
from ccbus.events.envelope import Event
from ccbus.observe.live import LiveFeed
from ccbus.observe.logs import Redactor, redact_in_logs
from ccbus.observe.metrics import Counters, Histogram, KeyCache, Labels, SeriesKey
from ccbus.observe.traces import RuleTraces
from ccbus.pipeline import Outcome, Pipeline
from ccbus.plugins import PluginHost
from ccbus.records import Invocation
from ccbus.rules.engine import Engine, RuleStats
from ccbus.rules.expressions import ExpressionCompiler
from ccbus.rules.functions import Clock, SystemClock, build_library
from ccbus.rules.loader import RuleSet, load_rules
from ccbus.rules.model import Rule
from ccbus.rules.state import SqliteStateStore, StateTable
from ccbus.runtime.lock import StateDirLock
from ccbus.runtime.service import LIVE_KEYS, Service, checked_config
from ccbus.runtime.systemd import Notifier
from ccbus.sources.api import BadInputCounter, Source, SourceContext
from ccbus.sources.backoff import Backoff

if TYPE_CHECKING:  # groups need psycopg (ccbus[postgres]): imported when configured
    from ccbus.delivery.postgres import PostgresStateStore
    from ccbus.runtime.group import GroupMember

__all__ = ["Bus", "SourceRuntime"]

log = logging.getLogger("ccbus.runtime.bus")

#: How long SIGTERM waits for calls in flight before leaving them to the next start.
DRAIN_TIMEOUT = 10.0
#: How long start-up waits for every source task to begin before saying READY.
START_WAIT = 5.0
#: Characters of an event's data the live view gets.
LIVE_DATA_CHARS = 500
STATE_FLUSH_INTERVAL = 1.0
#: Seconds a busy thread may hold the GIL while another waits for it (Python's
#: default is 5 ms).  Client libraries that read on their own thread (stomp.py,
#: signalrcore) give the GIL up at every socket read and must win it back from
#: the busy event loop before they can parse the next frame (the figures are in
#: bench/README.md, "Tuning constants").
SWITCH_INTERVAL = 0.0005
#: Seconds of routing after which :meth:`Bus.publish` lets the loop run other tasks.
#: A source that hands over many events without waiting (a webhook body that is a
#: list, a replay) would otherwise hold the loop for all of them; each event is
#: bounded by ``event_budget``, this bounds a run of them.  Only routing time counts,
#: so cheap events leave the loop's turns to the dispatcher's own rhythm.
YIELD_EVERY = 0.02
#: Seconds of routing past which an event is costly: its source then waits as long
#: as the event took before its next event is routed.  A source whose events use up
#: their ``event_budget`` (a crafted rule or payload) gets at most half of the loop,
#: and the other half stays with the other sources, ``/healthz`` and delivery.
COSTLY_EVENT = 0.002
#: The cyclic garbage collector's thresholds while the bus runs (CPython's
#: default is 700, 10, 10).  Every event allocates dozens of objects, so at
#: the default a young collection ran every few events and a full one, which
#: walks every object the process holds (rule state, the duplicate window),
#: every few thousand, a noticeable share of bus_bench's run time (bench/README.md,
#: "Tuning constants").  Nearly all of that garbage is freed by reference counting
#: anyway; the collector only has cycles to find.
GC_THRESHOLDS = (10_000, 10, 10)
SWEEP_INTERVAL = 60.0


@dataclass(slots=True)
class SourceRuntime:
    """One configured source instance and how it is doing."""

    name: str
    plugin: str
    state: str = "starting"
    restarts: int = 0
    #: Changes into ``reconnecting``, whoever made them (the bus or the plugin).
    reconnects: int = 0
    last_error: str = ""
    #: ``time.time()`` of the last state change.
    since: float = field(default_factory=time.time)
    finished: anyio.Event = field(default_factory=anyio.Event)
    #: Called after every state change (the bus counts and publishes it).
    on_change: Callable[[SourceRuntime], None] | None = None
    # set right after construction: the context needs set_state, the source needs the context
    context: SourceContext = field(init=False)
    source: Source = field(init=False)

    def set_state(self, state: str) -> None:
        """What the source says it is doing (``connected``, ``reconnecting``, ...)."""
        if state != self.state:
            log.info("source %s: %s", self.name, state)
            self._change(state)

    def begin(self) -> None:
        """The bus is about to call ``run()``: ``running`` until the source says more.

        Not logged: a source that reports its own states (``connecting`` first,
        typically) shows just those in the log; one that reports none still
        counts as ready while it runs.
        """
        if self.state != "running":
            self._change("running")

    def _change(self, state: str) -> None:
        self.state = state
        self.since = time.time()
        if state == "reconnecting":
            self.reconnects += 1
        if self.on_change is not None:
            self.on_change(self)


def make_compiler(
    plugins: PluginHost, clock: Clock, secrets: Mapping[str, str] | None = None
) -> ExpressionCompiler:
    """The expression compiler for this bus: built-in functions plus plugins' (built-ins win).

    ``secrets`` are the config's named ``secrets:``, reachable in rules as
    ``secret("name")`` so that tokens never have to be written in rule files.
    """
    library = dict(plugins.functions)
    library.update(build_library(clock, secrets or {}))
    return ExpressionCompiler(library)


class Bus:
    """One ccbus instance. Build it from a loaded config, then ``await bus.run()``."""

    def __init__(
        self,
        loaded: LoadedConfig,
        plugins: PluginHost,
        *,
        clock: Clock | None = None,
        dry_run: bool = False,
        observer: Callable[[Event, list[Any], list[Invocation]], None] | None = None,
        persist_state: bool = True,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.plugins = plugins
        self.clock = clock or SystemClock()
        self.dry_run = dry_run
        self.start_time = time.time()
        #: The config's secrets: calls are recorded with references to them, and
        #: everything shown (HTTP answers, traces, the live view) masks them.
        self.secrets = loaded.secret_book()
        #: What HTTP answers are passed through: secrets never leave the process.
        self.redactor = Redactor(book=self.secrets)
        self.counters = Counters()
        self.latency = Histogram()
        # series keys of the counters that move on every event or call
        self._events_in: KeyCache[tuple[str, str], SeriesKey] = KeyCache(
            lambda st: self.counters.key("events_in", source=st[0], type=st[1])
        )
        self._rule_fired: KeyCache[str, SeriesKey] = KeyCache(
            lambda rule: self.counters.key("rule_fired", rule=rule)
        )
        self._latency_of: KeyCache[str, Labels] = KeyCache(
            lambda action: self.latency.key(action=action)
        )
        self.live = LiveFeed()
        self.traces = RuleTraces(self.config.traces, self.secrets)
        self.compiler = make_compiler(plugins, self.clock, self.config.secrets)
        self.store: SqliteStateStore | PostgresStateStore | None = (
            self._rule_state_store() if persist_state else None)
        self.engine = Engine(state=StateTable(self.config.max_keys_per_rule))
        if self.config.traces:
            self.engine.tracer = self.traces
        self.pipeline = Pipeline(
            self.engine, dedup_window=self.config.dedup_window, observer=observer,
            event_budget=self.config.event_budget,
        )
        self.ruleset = RuleSet()
        self.sources: dict[str, SourceRuntime] = {}
        self.http_port: int | None = None
        self.started = anyio.Event()
        self.http = HttpClients()
        #: Entered when the state directory is full (see :mod:`ccbus.delivery.outage`).
        self.outage = StorageOutage(f"the state directory {loaded.state_dir}",
                                    on_begin=lambda: self.counters.inc("storage_outages"))
        #: This instance's group membership (``cluster:``), None for a bus on its own.
        self.cluster: GroupMember | None = None
        if self.config.cluster is not None:
            from ccbus.runtime.group import GroupMember

            self.cluster = GroupMember(self.config.cluster, self._digest())
        self.delivery_store = self._delivery_store()
        full = getattr(self.delivery_store, "full", None)
        if full is not None:  # the outbox opened, but cannot take a write now
            self.outage.begin("opening the outbox", full)
        self.dispatcher = self._make_dispatcher(self.delivery_store)
        self._wakeup = anyio.Event()
        self._routed = 0.0  # seconds of routing since publish last yielded the loop
        #: sources whose last events were costly -> time.perf_counter() until which they wait
        self._cooling: dict[str, float] = {}
        self._action_logs: KeyCache[str, logging.Logger] = KeyCache(
            lambda action: logging.getLogger(f"ccbus.action.{action}")
        )
        self.counters.inc("events_duplicate", 0)  # shown in /metrics from the start
        self.counters.inc("storage_outages", 0)
        self._cancel: anyio.CancelScope | None = None
        self.service: Service | None = None
        self._sources_begun = anyio.Event()
        self._leading = False
        self.load_rules(initial=True)

    def _make_dispatcher(self, store: DeliveryStore) -> Dispatcher:
        return Dispatcher(
            store,
            self.plugins.actions,
            self.config.delivery,
            self._action_context,
            self.counters,
            on_settled=self._settled,
            on_result=self._continue_rule,
            secrets=self.secrets,
            outage=self.outage,
        )

    def _digest(self) -> str:
        """The config and rule files' digest, so members can tell that others differ."""
        from ccbus.runtime.group import config_digest

        parts = [self.loaded.path.read_bytes()] if self.loaded.path else []
        for root in self.loaded.rule_paths:
            files = sorted(root.rglob("*.y*ml")) if root.is_dir() else [root]
            parts += [p.read_bytes() for p in files if p.is_file()]
        return config_digest(*parts)

    def _rule_state_store(self) -> SqliteStateStore | None:
        if self.config.cluster is not None:
            return None  # a group keeps rule state in PostgreSQL, opened for each term
        path = self.loaded.state_dir / "rules.sqlite3"
        try:
            return SqliteStateStore(path)
        except (OSError, sqlite3.Error) as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise StateDirError(
                f"cannot keep rule state at {path}: {reason} (check state_dir: "
                "it must be a writable directory with free space)"
            ) from None

    def _delivery_store(self) -> DeliveryStore:
        if not self.config.delivery.outbox or self.config.cluster is not None:
            # a group member's outbox is in PostgreSQL, opened when it leads
            return MemoryDeliveryStore(book=self.secrets)
        return SqliteDeliveryStore(
            self.loaded.state_dir / "delivery.sqlite3", synchronous=self.config.delivery.synchronous
        )

    # -- rules ------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: apply the config file's live keys (or refuse the file), then reload rules.

        Files that are too costly to read are refused by the loaders with a
        located reason; anything else that still escapes them is logged and
        counted here, never allowed to stop the process: what is running stays.
        """
        try:
            self.reload_config()
            self.load_rules()
        except Exception as err:  # a last line: a reload must never stop the bus
            self._reload_failed("reload", err)

    def _reload_failed(self, what: str, err: Exception) -> None:
        self.counters.inc("config_reload_errors")
        log.error("%s failed: %s: %s; the running config and rules stay",
                  what, type(err).__name__, str(err)[:300])

    def reload_config(self) -> bool:
        """Apply the config file's live keys, or refuse the file (False) and say why."""
        path = self.loaded.path
        if path is None:
            return True
        fresh, problems = checked_config(path, self.plugins)
        if fresh is not None:  # a refused file's problems may quote its values: hide them too
            # masked from now on; by name only at the next start, as ``secrets:`` itself
            # (rules' secret() keeps the values the running config loaded)
            self.secrets.add({}, fresh.secrets)
            redact_in_logs(fresh.secrets)
            self.loaded.secrets |= fresh.secrets
        if fresh is None or problems:
            for problem in problems:
                log.error("reload: %s", problem)
            log.error("reload refused: the config has %d problem(s); the running config stays",
                      len(problems))
            self.counters.inc("config_reload_errors")
            return False
        old = self.config
        new = fresh.config
        later = [key for key in type(new).model_fields
                 if key not in LIVE_KEYS and getattr(new, key) != getattr(old, key)]
        if later:
            log.warning("reload: %s changed; that takes effect at the next restart",
                        ", ".join(later))
        self.config = old.model_copy(update={key: getattr(new, key) for key in LIVE_KEYS})
        self.loaded.config = self.config
        logging.getLogger().setLevel(self.config.log_level.upper())
        return True

    def load_rules(self, *, initial: bool = False) -> RuleSet:
        """(Re)load the rule files: validate first, then swap at once, and say what changed.

        A file that fails on reload keeps its previous rules running, so a
        typo saved in an editor never switches a working rule off.
        """
        fresh = load_rules(
            self.loaded.rule_paths, actions=self.plugins.actions, compiler=self.compiler
        )
        rules: list[Rule] = []
        previous = {f.path: f for f in self.ruleset.files}
        for rule_file in fresh.files:
            for err in rule_file.errors:
                log.error("%s", err)
                self.counters.inc("rule_load_errors")
            old = previous.get(rule_file.path)
            if rule_file.errors and old is not None and not initial:
                log.warning(
                    "%s has errors: keeping its previous %d rule(s) until it is fixed",
                    rule_file.path,
                    len(old.rules),
                )
                rule_file.rules = old.rules
            rules.extend(rule_file.rules)
        changes = self.engine.swap(rules)
        self.traces.retain({r.name for r in rules})
        self.ruleset = fresh
        summary = ", ".join(f"{k}: {', '.join(v)}" for k, v in changes.items() if v)
        log.info(
            "rules %s: %d active%s",
            "loaded" if initial else "reloaded",
            len(rules),
            f" ({summary})" if summary and not initial else "",
        )
        self.counters.inc("rule_reloads")
        return fresh

    # -- events ---------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Route ``event`` and queue its actions; returns when they are queued.

        While the state directory is full this waits (the source does not
        acknowledge, its broker keeps the message) and routes once there is space.
        A group member that stands by raises :class:`~ccbus.errors.NotLeading`
        (the listener answers 503): only the leader records calls.
        """
        if self.cluster is not None and not self._leading:
            raise NotLeading(self.cluster.reason())
        if self.outage.reason is not None:
            await self.outage.wait()
        self.counters.add(self._events_in[event.source, event.type])
        self.live.publish("event", partial(_event_record, event))
        armed = self.engine.timers_armed
        if self._cooling:
            await self._cool_down(event.source)
        began = time.perf_counter()
        outcome = self.pipeline.process(event, self.clock.now())
        spent = time.perf_counter() - began
        if spent > COSTLY_EVENT:
            source = event.source
            self._cooling[source] = max(self._cooling.get(source, 0.0), began + spent) + spent
        if self.engine.timers_armed != armed:  # a ``for`` timer: the timer task recomputes
            self._wakeup.set()
        if outcome.duplicates:
            self.counters.inc("events_duplicate", outcome.duplicates)
        elif outcome.invocations or outcome.render_errors:  # most events make no call
            await self._enqueue(outcome)
        self._routed += spent
        if self._routed > YIELD_EVERY:
            self._routed = 0.0
            await anyio.lowlevel.checkpoint()

    async def _cool_down(self, source: str) -> None:
        """Wait until ``source`` has paid for its costly events (see :data:`COSTLY_EVENT`).

        Checked again after every wait, with no await between the check and the
        routing that follows: of several tasks of one source (concurrent webhook
        requests) only one routes, then the others wait for its cost too.
        """
        while (until := self._cooling.get(source)) is not None:
            wait = until - time.perf_counter()
            if wait <= 0:
                del self._cooling[source]
                return
            await anyio.sleep(wait)

    async def _enqueue(self, outcome: Outcome) -> None:
        """Hand an outcome's calls to the dispatcher; returns once they are recorded.

        This runs for every call-making event, so the common case (calls and no
        dry run) takes no detours.
        """
        if not outcome.invocations and not outcome.render_errors:
            return
        for (rule, reason), dropped in outcome.emits_dropped.items():
            self.counters.inc("emit_dropped", dropped, rule=rule, reason=reason)
        calls = []
        dry = []
        for invocation in outcome.invocations:
            if invocation.spec.inline is not None:
                continue
            if self.dry_run and invocation.spec.side_effects:
                self.counters.inc("actions", action=invocation.action, outcome="dry_run")
                dry.append(invocation)
                continue
            calls.append(invocation)
        for firing in outcome.firings:
            self.counters.add(self._rule_fired[firing.rule.name])
            self.live.publish("rule", partial(_firing_record, firing.rule.name, firing.event,
                                              outcome.invocations, self.secrets, time.time()))
        if self.config.traces:
            if dry:
                dry_ids = {id(i) for i in dry}
                self.traces.rendered(dry, outcome="dry_run")
                self.traces.rendered([i for i in outcome.invocations if id(i) not in dry_ids])
            else:
                self.traces.rendered(outcome.invocations)
            if outcome.render_errors:
                self.traces.failed_to_render(outcome.render_errors)
        await self.dispatcher.submit(calls)
        if outcome.render_errors and not self.dry_run:
            await self.dispatcher.bury_unrendered(outcome.render_errors)

    async def _continue_rule(self, invocation: Invocation, result: Any) -> None:
        """A call succeeded: record the calls of its rule that wait for its result.

        The rule is looked up as it is now; a rule removed by a reload since
        the event arrived has nothing left to continue.
        """
        rule = self.engine.index.by_name(invocation.rule)
        if rule is None:
            return
        outcome = self.pipeline.continue_after(
            rule, invocation.event, invocation.index, result, self.clock.now()
        )
        if outcome is not None:
            await self._enqueue(outcome)

    def _settled(self, row: Pending, outcome: str, error: str) -> None:
        """An attempt of a recorded call ended: latency, traces, live view."""
        if outcome == "ok":
            self.latency.add(self._latency_of[row.action], max(0.0, time.time() - row.created))
        self.traces.settled(row.key, outcome, error)
        if outcome == "dead_letter":
            self.live.publish(
                "dead_letter",
                {"rule": row.rule, "action": row.action, "key": row.key, "reason": error,
                 "at": time.time()},
            )

    def _action_context(self, invocation: Invocation, attempt: int) -> ActionContext:
        return ActionContext(
            rule=invocation.rule,
            event=invocation.event,
            idempotency_key=invocation.idempotency_key,
            log=self._action_logs[invocation.action],
            targets=self.config.targets,
            http=self.http,
            attempt=attempt,
        )

    # -- running -----------------------------------------------------------------------

    def _build_sources(self) -> None:
        for name, source_config in self.config.sources.items():
            if not source_config.enabled:
                continue
            spec = self.plugins.source(source_config.plugin)
            runtime = SourceRuntime(name=name, plugin=source_config.plugin)
            runtime.context = SourceContext(
                name=name,
                options=self.plugins.source_options(self.loaded, name),
                emit=self.publish,
                log=logging.getLogger(f"ccbus.source.{name}"),
                state_dir=self.loaded.state_dir / "sources" / name,
                config_dir=self.loaded.base_dir,
                set_state=runtime.set_state,
                count_bad_input=self._bad_input_counter(name),
                paused=self.outage.describe,
            )
            runtime.on_change = self._source_changed
            self.counters.inc("source_reconnects", 0, source=name)
            runtime.context.state_dir.mkdir(parents=True, exist_ok=True)
            runtime.source = spec.factory(runtime.context)
            self.sources[name] = runtime

    def _bad_input_counter(self, source: str) -> BadInputCounter:
        def count(reason: str, amount: int = 1) -> None:
            self.counters.inc("source_bad_input", amount, source=source, reason=reason)

        return count

    def _starting(self) -> bool:
        return any(r.state == "starting" for r in self.sources.values())

    def _source_changed(self, runtime: SourceRuntime) -> None:
        if not self._starting():
            self._sources_begun.set()
        if runtime.state == "reconnecting":
            self.counters.inc("source_reconnects", source=runtime.name)
        self.live.publish(
            "source",
            {"name": runtime.name, "state": runtime.state, "reconnects": runtime.reconnects,
             "since": runtime.since, "last_error": runtime.last_error},
        )

    async def run(
        self,
        *,
        until_sources_finish: bool = False,
        handle_signals: bool = False,
        watch_rules: bool = True,
        notifier: Notifier | None = None,
    ) -> None:
        """Run until :meth:`stop` (or a signal, or, if asked, until every source finished).

        ``handle_signals`` (what ``ccbus run`` does) reloads on SIGHUP and stops
        on SIGTERM; ``notifier`` tells systemd about it (see :mod:`ccbus.runtime.service`).
        While it runs, the interpreter's thread switch interval is
        :data:`SWITCH_INTERVAL` and the garbage collector's thresholds
        :data:`GC_THRESHOLDS` (see there); both are restored after.

        A bus that keeps anything in the state directory (the outbox, rule
        state) first locks it, and raises
        :class:`~ccbus.runtime.lock.StateDirLocked` if another process holds it.
        """
        lock = StateDirLock(self.loaded.state_dir) if self._writes_state_dir() else None
        if lock is not None:
            lock.acquire()
        previous = sys.getswitchinterval()
        previous_gc = gc.get_threshold()
        sys.setswitchinterval(SWITCH_INTERVAL)
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            await self._run(until_sources_finish, handle_signals, notifier, watch_rules)
        finally:
            sys.setswitchinterval(previous)
            gc.set_threshold(*previous_gc)
            if lock is not None:
                lock.release()

    def _writes_state_dir(self) -> bool:
        return self.store is not None or isinstance(self.delivery_store, SqliteDeliveryStore)

    async def _run(
        self,
        until_sources_finish: bool,
        handle_signals: bool,
        notifier: Notifier | None,
        watch_rules: bool,
    ) -> None:
        if handle_signals or notifier is not None:
            self.service = Service(self, notifier or Notifier(None),
                                   reload=self.reload, stop=self.stop)
        group = self.cluster
        self._restore_state()
        self._build_sources()
        await self.plugins.call_each("startup", bus=self)
        http_stop = anyio.Event()
        async with anyio.create_task_group() as delivery:
            if group is None:  # a group member runs its dispatcher only while it leads
                await delivery.start(self.dispatcher.run)
            # HTTP lives beside delivery, not among the sources: it is stopped
            # gracefully (answering requests in flight) before delivery drains.
            http_done = anyio.Event()
            if self.config.http.enabled:
                await delivery.start(self._serve_http, http_stop, http_done)
            else:
                http_done.set()
            async with anyio.create_task_group() as tg:
                self._cancel = tg.cancel_scope
                if self.service is not None:
                    await tg.start(self.service.run)
                tg.start_soon(self._watch_storage)
                if watch_rules:
                    tg.start_soon(self._watch_rules)
                if group is not None:
                    for runtime in self.sources.values():
                        runtime.set_state("standby")
                    tg.start_soon(group.run, self._lead)
                else:
                    tg.start_soon(self._timers)
                    tg.start_soon(self._flush_state_forever)
                    for runtime in self.sources.values():
                        tg.start_soon(self._supervise, runtime)
                if self._starting():
                    with anyio.move_on_after(START_WAIT):  # every source task has begun
                        await self._sources_begun.wait()
                self.started.set()
                if self.service is not None:
                    self.service.ready()
                if until_sources_finish:
                    for runtime in self.sources.values():
                        await runtime.finished.wait()
                    tg.cancel_scope.cancel()
            if self.service is not None:
                self.service.stopping()
            self.live.close()
            http_stop.set()
            await http_done.wait()
            if group is None and not await self.dispatcher.drain(DRAIN_TIMEOUT):
                log.warning(
                    "stopping with calls still in flight; they stay in the outbox "
                    "and run again at the next start"
                )
            delivery.cancel_scope.cancel()
        await self.http.aclose()
        try:
            await self._flush_state()
        except Exception as err:  # noqa: BLE001 - stopping on a full disk is no crash
            if storage_error(err) is None:
                raise
            log.warning("rule state changes since the last save are lost: %s is full (%s)",
                        self.loaded.state_dir, storage_error(err))
        await self.plugins.call_each("shutdown", bus=self)
        log.info("stopped")

    async def _lead(self, epoch: int) -> None:
        """One term as the group's leader: restore, re-arm, resume, connect; until cancelled.

        Rule state and ``for`` timers come from the database (timers that fell
        due in the gap fire at once), the dispatcher resumes the calls the old
        leader left in the outbox (its epoch is fenced by now: the lease
        passed only after it ran out), and then the sources connect.  When
        the term ends (lease lost, SIGTERM) the sources stop; calls in flight
        get a renewal interval to finish, and whatever they record after the
        lease has passed is refused by the fence.
        """
        from ccbus.delivery.postgres import PostgresDeliveryStore, PostgresStateStore

        assert self.config.cluster is not None
        settings = self.config.cluster
        delivery = await anyio.to_thread.run_sync(PostgresDeliveryStore, settings, epoch)
        state = await anyio.to_thread.run_sync(PostgresStateStore, settings, epoch)
        dispatcher = self._make_dispatcher(delivery)
        try:
            self.store, self.delivery_store, self.dispatcher = state, delivery, dispatcher
            self.engine.state = StateTable(self.config.max_keys_per_rule)
            self.pipeline.engine = self.engine
            rows = await anyio.to_thread.run_sync(state.load)
            used = self.engine.state.restore(rows, self.engine.signatures())
            self.engine.swap(list(self.engine.index.rules))  # re-arm restored `for` timers
            since = self.clock.now() - self.config.dedup_window
            await anyio.to_thread.run_sync(state.forget_seen, since)
            self.pipeline.remember(await anyio.to_thread.run_sync(state.seen, since))
            log.info("epoch %d: restored %d rule state entries, %d call(s) left in the outbox",
                     epoch, used, await anyio.to_thread.run_sync(delivery.pending_count))
            async with anyio.create_task_group() as tg:
                await tg.start(dispatcher.run)
                tg.start_soon(self._timers)
                tg.start_soon(self._flush_state_forever)
                self._leading = True
                for runtime in self.sources.values():
                    tg.start_soon(self._supervise, runtime)
        finally:
            self._leading = False
            for runtime in self.sources.values():
                runtime.set_state("standby")
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(settings.renew_every):
                    try:
                        await dispatcher.drain(settings.renew_every)
                        await self._flush_state()
                    except Exception as err:  # fenced, or the database is away
                        log.warning("epoch %d: leaving the rest to the next leader: %s",
                                    epoch, err)
                await anyio.to_thread.run_sync(delivery.close)
                await anyio.to_thread.run_sync(state.close)

    def stop(self) -> None:
        """Stop sources and timers; queued actions still run to completion."""
        if self._cancel is not None:
            self._cancel.cancel()

    async def _supervise(self, runtime: SourceRuntime) -> None:
        backoff = Backoff()
        while True:
            backoff.started()
            runtime.begin()
            try:
                await runtime.source.run()
            except Exception as err:  # a source failure is retried, never fatal
                runtime.restarts += 1
                runtime.last_error = f"{type(err).__name__}: {err}"
                runtime.context.set_state("reconnecting")
                delay = backoff.next_delay()
                self.counters.inc("source_restarts", source=runtime.name)
                log.error(
                    "source %s (%s) failed: %s; restarting in %.1fs",
                    runtime.name,
                    runtime.plugin,
                    runtime.last_error,
                    delay,
                )
                await anyio.sleep(delay)
                continue
            runtime.context.set_state("finished")
            runtime.finished.set()
            return

    async def _timers(self) -> None:
        last_sweep = time.monotonic()
        while True:
            deadline = self.engine.next_deadline()
            delay = 1.0 if deadline is None else max(0.0, deadline - self.clock.now())
            with anyio.move_on_after(min(delay, 1.0)):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()
            await self._enqueue(self.pipeline.process_due(self.clock.now()))
            if time.monotonic() - last_sweep >= SWEEP_INTERVAL:
                last_sweep = time.monotonic()
                self.engine.sweep(self.clock.now())

    # -- state ----------------------------------------------------------------------------

    def _restore_state(self) -> None:
        if self.store is None or self.cluster is not None:
            return
        rows = self.store.load()
        used = self.engine.state.restore(rows, self.engine.signatures())
        self.engine.swap(list(self.engine.index.rules))  # re-arm restored `for` timers
        if rows:
            log.info("restored %d rule state entries (%d obsolete)", used, len(rows) - used)

    async def _flush_state(self) -> None:
        """Save changed rule state; rows that fail stay marked changed for the next flush."""
        if self.store is None:
            return
        rows = self.engine.state.take_changes()
        if rows:
            try:
                await anyio.to_thread.run_sync(self.store.save, rows)
            except BaseException:
                self.engine.state.dirty.update((rule, kind, key) for rule, kind, key, _ in rows)
                raise

    async def _flush_state_forever(self) -> None:
        while True:
            await anyio.sleep(STATE_FLUSH_INTERVAL)
            if self.outage.active:
                continue  # the storage watch saves it as it probes
            try:
                await self._flush_state()
            except Exception as err:  # a full disk must not stop routing
                self.counters.inc("state_flush_errors")
                if storage_error(err) is not None:
                    self.outage.begin("saving rule state", err)
                else:
                    log.error("saving rule state failed: %s", err)

    async def _watch_storage(self) -> None:
        """Enter a storage outage when free space runs low, before a write fails; during
        one, probe for space, say once a minute that it goes on, and end it (which
        resumes the sources) once there is room and a probe writes."""
        if not self._writes_state_dir():
            return
        state_dir = self.loaded.state_dir
        while True:
            await anyio.sleep(PROBE_INTERVAL)
            low = low_space(state_dir)
            if not self.outage.active:
                if low is not None:
                    self.outage.begin("checking free space", low)
                continue
            if low is not None:
                self.outage.remind()
                continue
            try:
                probe = getattr(self.delivery_store, "probe", None)
                if probe is not None:
                    await anyio.to_thread.run_sync(probe)
                await self._flush_state()
            except Exception as err:  # noqa: BLE001 - still full, or worse: say so, go on
                self.counters.inc("storage_probe_failures")
                if storage_error(err) is None:
                    log.debug("probing the state directory failed: %s", err)
                self.outage.remind()
                continue
            self.outage.end()

    def storage_problem(self) -> str | None:
        """Why the bus accepts no input now (a full state directory), None when it does."""
        return self.outage.describe()

    # -- reload, signals, HTTP ----------------------------------------------------------

    async def _watch_rules(self) -> None:
        import watchfiles

        paths = [p for p in self.loaded.rule_paths if p.exists()]
        if not paths:
            return
        async for changes in watchfiles.awatch(*paths, debounce=300, recursive=True):
            if any(Path(p).suffix in (".yaml", ".yml") for _, p in changes):
                try:
                    self.load_rules()
                except Exception as err:  # a last line, as in reload(): the watcher goes on
                    self._reload_failed("rules reload", err)

    async def _serve_http(
        self,
        stop: anyio.Event,
        done: anyio.Event,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        from starlette.routing import Route

        from ccbus.observe.admin import AdminPolicy, is_loopback
        from ccbus.observe.listener import ProtocolErrors, build_app, serve_asgi

        http = self.config.http
        sock = socket.socket(socket.AF_INET6 if ":" in http.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((http.host, http.port))
        except OSError as err:
            sock.close()
            raise OSError(
                f"cannot listen on {http.listen}: {err.strerror} (set http.listen in the config)"
            ) from None
        sock.listen(128)
        self.http_port = sock.getsockname()[1]
        log.info("HTTP listener on %s:%d", http.host, self.http_port)
        try:
            routes = [Route(path, handler, methods=methods)
                      for runtime in self.sources.values()
                      for path, methods, handler in runtime.context.routes]
            policy = AdminPolicy(token=http.admin_token or None, loopback=is_loopback(http.host))
            await serve_asgi(build_app(self, routes, desk=self, policy=policy), sock, stop,
                             client_timeout=http.client_timeout,
                             on_protocol_error=ProtocolErrors(self.counters),
                             task_status=task_status)
        finally:
            done.set()

    def rule_names(self) -> list[str]:
        """The names of the rules loaded and routing, sorted (part of the observers' view)."""
        return sorted(rule.name for rule in self.engine.index.rules)

    def rule_stats(self) -> Mapping[str, RuleStats]:
        """Each rule's evaluation counts, by rule name."""
        return self.engine.stats

    async def outbox_counts(self) -> tuple[int, int]:
        """Calls waiting in the outbox and dead letters (read off the event loop)."""
        store = self.delivery_store

        def both() -> tuple[int, int]:
            return store.pending_count(), store.dead_count()

        if store.blocking:
            return await anyio.to_thread.run_sync(both)
        return both()

    # -- the console's dead letters (a DeadLetterDesk) -------------------------------------

    async def dead_letter_list(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """How many dead letters there are, and the newest ``limit``, newest first."""
        store = self.delivery_store
        if not isinstance(store, SqliteDeliveryStore):  # delivery.outbox: false
            letters = list(getattr(store, "dead", []))
        else:
            letters = await anyio.to_thread.run_sync(store.dead_letters)
        newest = letters[::-1][:limit]
        return len(letters), [
            {"id": d.id, "rule": d.rule, "action": d.action, "attempts": d.attempts,
             "created": d.created, "failed_at": d.failed_at, "reason": d.reason,
             "retryable": d.params is not None, "event": _event_summary(d.event)}
            for d in newest
        ]

    def _sqlite_store(self) -> SqliteDeliveryStore:
        store = self.delivery_store
        if not isinstance(store, SqliteDeliveryStore):
            raise ValueError("dead letters are kept in memory (delivery.outbox: false): "
                             "they cannot be retried or purged")
        return store

    async def retry_dead_letters(self, ids: list[int]) -> list[int]:
        """Back in the outbox, due now; the dispatcher's poll picks them up."""
        moved: list[int] = await anyio.to_thread.run_sync(self._sqlite_store().resurrect, ids)
        self.live.publish("dead_letters", {"retried": moved, "at": time.time()})
        return moved

    async def purge_dead_letters(self, ids: list[int]) -> int:
        store = self._sqlite_store()
        purged: int = await anyio.to_thread.run_sync(lambda: store.purge(ids=ids))
        self.live.publish("dead_letters", {"purged": purged, "at": time.time()})
        return purged


def _event_summary(stored: str) -> dict[str, Any]:
    """The envelope attributes of a dead letter's stored event, for the console's line."""
    try:
        doc = json.loads(stored)
    except ValueError:
        return {}
    return {k: doc.get(k) for k in ("id", "type", "source", "subject", "time")}


def _event_record(event: Event) -> dict[str, Any]:
    """What the live view shows of an event: the data abridged for its line, the whole
    envelope for its expanded row and ``ccbus tail --json``."""
    data = json.dumps(event.data, default=str, ensure_ascii=False)
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "time": event.time.isoformat(),
        "data": data if len(data) <= LIVE_DATA_CHARS else data[: LIVE_DATA_CHARS - 1] + "…",
        # the whole envelope, for the console's expanded row and `ccbus tail --json`
        "envelope": event.to_cloudevent(),
    }


def _firing_record(rule: str, event: Event, invocations: list[Invocation],
                   secrets: SecretBook, at: float) -> dict[str, Any]:
    """A rule hit for the live view; ``at`` is taken when the rule fired (the record is
    built later, when a page reads it); calls show secrets as references."""
    calls = [i.describe(secrets) for i in invocations if i.rule == rule and i.event is event]
    return {"rule": rule, "type": event.type, "source": event.source, "event": event.id,
            "calls": calls[:10], "at": at}
