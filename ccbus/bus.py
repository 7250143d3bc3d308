"""The running bus: sources -> pipeline -> action workers, on one anyio event loop.

::

    source tasks ──emit──▶ Pipeline.process (sync) ──▶ bounded action queue ──▶ workers
         ▲                        │                                               │
         └── restarted with ──────┘ timers (for:), state flush, rule reload       ▼
             jittered backoff                                              ActionSpec.run

* ``emit`` returns once the event's actions are queued, and the queue is
  bounded, so a slow action slows its sources down (back-pressure) instead
  of growing memory.
* Routing is synchronous, so a rule reload (file change or SIGHUP) swaps
  the rule set between two events: none is dropped or routed twice.
* A source whose ``run()`` raises is restarted after a jittered, growing
  delay, forever; one that returns has finished (a replay at its end).
* SIGTERM/SIGINT stop the sources, let queued actions finish (up to
  ``drain_timeout``), save rule state and call the ``shutdown`` hooks.
"""

from __future__ import annotations

import logging
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .actions import ActionContext, Invocation
from .backoff import Backoff
from .config import LoadedConfig, source_options
from .delivery.dispatcher import Dispatcher
from .delivery.store import DeliveryStore, MemoryDeliveryStore, SqliteDeliveryStore, StateDirError
from .events import Event
from .expressions import ExpressionCompiler
from .functions import Clock, SystemClock, build_library
from .httpclients import HttpClients
from .metrics import Counters
from .pipeline import Outcome, Pipeline
from .plugins import PluginHost
from .rules.engine import Engine
from .rules.loader import RuleSet, load_rules
from .rules.model import Rule
from .rules.state import SqliteStateStore, StateTable
from .sources import Source, SourceContext

__all__ = ["Bus", "SourceRuntime"]

log = logging.getLogger("ccbus.bus")

#: How long SIGTERM waits for calls in flight before leaving them to the next start.
DRAIN_TIMEOUT = 10.0
STATE_FLUSH_INTERVAL = 1.0
SWEEP_INTERVAL = 60.0


@dataclass(slots=True)
class SourceRuntime:
    """One configured source instance and how it is doing."""

    name: str
    plugin: str
    state: str = "starting"
    restarts: int = 0
    last_error: str = ""
    finished: anyio.Event = field(default_factory=anyio.Event)
    # set right after construction: the context needs set_state, the source needs the context
    context: SourceContext = field(init=False)
    source: Source = field(init=False)

    def set_state(self, state: str) -> None:
        """What the source says it is doing (``connected``, ``reconnecting``, ...)."""
        if state != self.state:
            self.state = state
            log.info("source %s: %s", self.name, state)


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
        self.counters = Counters()
        self.compiler = make_compiler(plugins, self.clock, self.config.secrets)
        self.store = self._rule_state_store() if persist_state else None
        self.engine = Engine(state=StateTable(self.config.max_keys_per_rule))
        self.pipeline = Pipeline(
            self.engine, dedup_window=self.config.dedup_window, observer=observer
        )
        self.ruleset = RuleSet()
        self.sources: dict[str, SourceRuntime] = {}
        self.http_port: int | None = None
        self.started = anyio.Event()
        self.http = HttpClients()
        self.delivery_store = self._delivery_store()
        self.dispatcher = Dispatcher(
            self.delivery_store,
            plugins.actions,
            self.config.delivery,
            self._action_context,
            self.counters,
        )
        self._wakeup = anyio.Event()
        self._cancel: anyio.CancelScope | None = None
        self.load_rules(initial=True)

    def _rule_state_store(self) -> SqliteStateStore:
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
        if not self.config.delivery.outbox:
            return MemoryDeliveryStore()
        return SqliteDeliveryStore(
            self.loaded.state_dir / "delivery.sqlite3", synchronous=self.config.delivery.synchronous
        )

    # -- rules ------------------------------------------------------------------------

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
        """Route ``event`` and queue its actions; returns when they are queued."""
        self.counters.inc("events_in", source=event.source, type=event.type)
        before = self.engine.next_deadline()
        outcome = self.pipeline.process(event, self.clock.now())
        if self.engine.next_deadline() != before:
            self._wakeup.set()
        await self._enqueue(outcome)

    async def _enqueue(self, outcome: Outcome) -> None:
        """Hand an outcome's calls to the dispatcher; returns once they are recorded."""
        self.counters.inc("events_duplicate", outcome.duplicates)
        calls = []
        for invocation in outcome.invocations:
            self.counters.inc("rule_fired", rule=invocation.rule)
            if invocation.spec.inline is not None:
                continue
            if self.dry_run and invocation.spec.side_effects:
                self.counters.inc("actions", action=invocation.action, outcome="dry_run")
                continue
            calls.append(invocation)
        await self.dispatcher.submit(calls)
        if outcome.render_errors and not self.dry_run:
            await self.dispatcher.bury_unrendered(outcome.render_errors)

    def _action_context(self, invocation: Invocation, attempt: int) -> ActionContext:
        return ActionContext(
            rule=invocation.rule,
            event=invocation.event,
            idempotency_key=invocation.idempotency_key,
            log=logging.getLogger(f"ccbus.action.{invocation.action}"),
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
                options=source_options(self.loaded, self.plugins, name),
                emit=self.publish,
                log=logging.getLogger(f"ccbus.source.{name}"),
                state_dir=self.loaded.state_dir / "sources" / name,
                config_dir=self.loaded.base_dir,
                set_state=runtime.set_state,
            )
            runtime.context.state_dir.mkdir(parents=True, exist_ok=True)
            runtime.source = spec.factory(runtime.context)
            self.sources[name] = runtime

    async def run(
        self,
        *,
        until_sources_finish: bool = False,
        handle_signals: bool = False,
        watch_rules: bool = True,
    ) -> None:
        """Run until :meth:`stop` (or a signal, or, if asked, until every source finished)."""
        self._restore_state()
        self._build_sources()
        await self.plugins.call_each("startup", bus=self)
        http_stop = anyio.Event()
        async with anyio.create_task_group() as delivery:
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
                if handle_signals:
                    tg.start_soon(self._signals)
                tg.start_soon(self._timers)
                tg.start_soon(self._flush_state_forever)
                if watch_rules:
                    tg.start_soon(self._watch_rules)
                for runtime in self.sources.values():
                    tg.start_soon(self._supervise, runtime)
                self.started.set()
                if until_sources_finish:
                    for runtime in self.sources.values():
                        await runtime.finished.wait()
                    tg.cancel_scope.cancel()
            http_stop.set()
            await http_done.wait()
            if not await self.dispatcher.drain(DRAIN_TIMEOUT):
                log.warning(
                    "stopping with calls still in flight; they stay in the outbox "
                    "and run again at the next start"
                )
            delivery.cancel_scope.cancel()
        await self.http.aclose()
        await self._flush_state()
        await self.plugins.call_each("shutdown", bus=self)
        log.info("stopped")

    def stop(self) -> None:
        """Stop sources and timers; queued actions still run to completion."""
        if self._cancel is not None:
            self._cancel.cancel()

    async def _supervise(self, runtime: SourceRuntime) -> None:
        backoff = Backoff()
        while True:
            backoff.started()
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
        if self.store is None:
            return
        rows = self.store.load()
        used = self.engine.state.restore(rows, self.engine.signatures())
        self.engine.swap(list(self.engine.index.rules))  # re-arm restored `for` timers
        if rows:
            log.info("restored %d rule state entries (%d obsolete)", used, len(rows) - used)

    async def _flush_state(self) -> None:
        if self.store is None:
            return
        rows = self.engine.state.take_changes()
        if rows:
            await anyio.to_thread.run_sync(self.store.save, rows)

    async def _flush_state_forever(self) -> None:
        while True:
            await anyio.sleep(STATE_FLUSH_INTERVAL)
            try:
                await self._flush_state()
            except Exception as err:  # a full disk must not stop routing
                self.counters.inc("state_flush_errors")
                log.error("saving rule state failed: %s", err)

    # -- reload, signals, HTTP ----------------------------------------------------------

    async def _watch_rules(self) -> None:
        import watchfiles

        paths = [p for p in self.loaded.rule_paths if p.exists()]
        if not paths:
            return
        async for changes in watchfiles.awatch(*paths, debounce=300, recursive=True):
            if any(Path(p).suffix in (".yaml", ".yml") for _, p in changes):
                self.load_rules()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading rules")
                    self.load_rules()
                else:
                    log.info("%s: stopping", signal.Signals(signum).name)
                    self.stop()

    async def _serve_http(
        self,
        stop: anyio.Event,
        done: anyio.Event,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        from .http import build_app, serve

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
            await serve(build_app(self), sock, stop, task_status=task_status)
        finally:
            done.set()

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` answers."""
        return {
            "status": "ok",
            "rules": len(self.engine.index.rules),
            "sources": {
                n: {
                    "plugin": r.plugin,
                    "state": r.state,
                    "restarts": r.restarts,
                    "last_error": r.last_error,
                }
                for n, r in self.sources.items()
            },
            "events_in": self.counters.total("events_in"),
        }
