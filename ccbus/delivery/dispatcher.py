"""Running recorded calls: lanes, retries with backoff, dead letters, draining.

``submit()`` records calls and queues them in memory behind their lane,
where up to the lane's concurrency of worker tasks run them one after
another (a worker lives while its lane has work, so a steady stream does
not pay for a new task per call); a poller picks up what is due later (retries, calls
recorded by an earlier run or left on disk, dead letters an admin retried).
Memory stays bounded: at most ``MAX_IN_FLIGHT`` calls run and
``MAX_QUEUED`` wait in memory (``LANE_BACKLOG`` per lane); everything else
waits in the store.  A lane is a target (a webhook host, a notification
target): its calls share a concurrency limit, so a slow or dead target holds
up only its own lane.  A lane whose calls keep failing (a dead target) pauses
between attempts (see :data:`LANE_FAILURES_TO_PAUSE`), and its calls beyond
the lane's backlog stay on disk, untouched by the poller until it has room.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from pydantic import ValidationError

from ccbus.actions.api import ActionContext, ActionSpec, idempotency_key
from ccbus.config.secrets import SecretBook
from ccbus.delivery.outage import StorageOutage, storage_error
from ccbus.delivery.policy import DeliveryConfig, DeliveryPolicy
from ccbus.delivery.store import DeliveryStore, Pending, event_json
from ccbus.errors import PermanentActionError, RetryableActionError
from ccbus.events.envelope import Event
from ccbus.observe.logs import LogEvery
from ccbus.observe.metrics import Counters, KeyCache, SeriesKey
from ccbus.records import Invocation, RenderFailure

__all__ = ["Dispatcher"]

log = logging.getLogger("ccbus.delivery")

MAX_IN_FLIGHT = 1000  # calls running at once, all lanes
MAX_QUEUED = 10_000  # calls held in memory behind their lane, all lanes
LANE_BACKLOG = 1000  # calls held in memory behind one lane
POLL_INTERVAL = 0.5
#: A source draining a backlog yields to the workers after this many submits
#: (a source that waits for input yields anyway); bounds the calls queued per turn.
#: While calls are in flight (a webhook waiting for its answer) the loop must turn
#: for them to finish and the next to start, so the source yields often.
SUBMITS_PER_YIELD = 32
#: ... and this many while no call is in flight (in-process actions run to the end
#: at once): then a turn of the loop only costs, a poll of the selector (a system
#: call, and the GIL given up to the client libraries' threads) and the workers'
#: wake-ups.  128 for all would slow webhooks waiting for their answers; the A/B
#: figures are in bench/README.md, "Tuning constants".
SUBMITS_PER_YIELD_IDLE = 128
#: Delivered calls are forgotten from the outbox in batches, at most this long after
#: delivery (a memory store forgets each at once: see ``forgets_each``).
#: A crash in between runs them once more: at-least-once, and receivers
#: deduplicate by the idempotency key.  One delete per batch instead of one
#: per call is a third of the outbox's cost per delivery.
FORGET_INTERVAL = 0.05
#: How often the watchdog looks for calls past their timeout: a timeout ends up to this late.
WATCHDOG_TICK = 0.1
#: How often the store's write-ahead log is copied back (in a worker thread).
CHECKPOINT_INTERVAL = 1.0
#: After this many attempts in a row failed (retryable) in one lane, the lane pauses
#: for the last one's retry delay before its next call: a dead target is probed by one
#: call at a time instead of every waiting call failing in turn, which spent the
#: loop and the store on futile attempts and slowed the lanes of live targets.
LANE_FAILURES_TO_PAUSE = 5


@dataclass(eq=False, slots=True)
class _Watched:
    """A worker's cancel scope, and until when its current call may run (``time.monotonic()``;
    ``inf``: none).  Not ``anyio.current_time()``: it asks which async library runs, per call."""

    scope: anyio.CancelScope
    until: float = math.inf


class Dispatcher:
    """Records, runs and retries action calls for one bus."""

    def __init__(
        self,
        store: DeliveryStore,
        actions: Mapping[str, ActionSpec],
        config: DeliveryConfig,
        context: Callable[[Invocation, int], ActionContext],
        counters: Counters | None = None,
        clock: Callable[[], float] = time.time,
        on_settled: Callable[[Pending, str, str], None] | None = None,
        on_result: Callable[[Invocation, Any], Awaitable[None]] | None = None,
        secrets: SecretBook | None = None,
        outage: StorageOutage | None = None,
    ) -> None:
        """``on_settled(row, outcome, error)`` hears how every attempt ended
        (``ok``, ``retry``, ``dead_letter``): the bus feeds metrics and traces from it.
        ``await on_result(invocation, result)`` hears what a successful call
        returned before the call is forgotten: the bus records the rule's calls
        that wait for it (``previous`` in their parameters).
        ``secrets``: the config's secrets; a call is recorded with references to them
        in place of their values, which are put back only as the call is sent, and
        every error stored or reported is masked with them.  ``outage`` is
        entered when a write fails for want of space (see
        :mod:`ccbus.delivery.outage`): the write waits for it to end and is
        made again, instead of raising out of the bus."""
        self.store = store
        self.secrets = secrets if secrets is not None else SecretBook()
        self.actions = actions
        self.config = config
        self.context = context
        self.counters = counters or Counters()
        self.clock = clock
        self.on_settled = on_settled or (lambda row, outcome, error: None)
        self.on_result = on_result
        self.outage = outage or StorageOutage()
        self._held: set[int] = set()  # ids running or queued in memory
        self._running_ids: set[int] = set()
        self._delivered: list[int] = []  # delivered calls the store has yet to forget
        self._forgetting: set[int] = set()  # those ids, and any being forgotten right now
        self._delivered_some = anyio.Event()
        self._delivered_noted = False  # _delivered_some was set for the batch gathering now
        self._lane_running: dict[str, int] = {}  # calls running, per lane
        self._lane_workers: dict[str, int] = {}  # worker tasks, per lane (see _work)
        self._worker_count = 0
        self._unyielded = 0  # submits since the last yield to the workers
        self._retry_log = LogEvery(60.0)  # retry warnings, per rule and action
        self._next_retry = math.inf  # the earliest retry scheduled since the last poll
        self._watched: set[_Watched] = set()  # workers' scopes, for the watchdog
        self._watch_wanted = anyio.Event()  # set when there is something to watch
        self._queues: dict[str, deque[tuple[Pending, Invocation]]] = {}
        self._lane_failures: dict[str, int] = {}  # retryable failures in a row, per lane
        self._lane_paused: dict[str, float] = {}  # until when (time.monotonic()) per lane
        self._pause_log = LogEvery(60.0)  # per lane
        # series keys of the counters that move on every call, per action
        self._recorded: KeyCache[str, SeriesKey] = KeyCache(
            lambda action: self.counters.key("actions_recorded", action=action)
        )
        self._seconds: KeyCache[str, SeriesKey] = KeyCache(
            lambda action: self.counters.key("action_seconds", action=action)
        )
        self._succeeded: KeyCache[str, SeriesKey] = KeyCache(
            lambda action: self.counters.key("actions", action=action, outcome="ok")
        )
        self._tasks: TaskGroup | None = None
        self._wakeup = anyio.Event()
        self._left_waiting: set[str] = set()  # lanes that left calls on disk for want of room
        # set by drain() while it waits for the running calls: no Event to set per call
        self._drained: anyio.Event | None = None

    # -- recording ------------------------------------------------------------------

    async def submit(self, invocations: list[Invocation]) -> None:
        """Record calls durably, then start those there is room for. Returns once recorded."""
        if not invocations:
            return
        now = self.clock()
        rows = [self._row(i, now) for i in invocations]
        store = self.store
        try:
            ids = await self._io(store.add, rows) if store.blocking else store.add(rows)
        except Exception as err:  # noqa: BLE001 - a full disk: wait for space, not raise
            if storage_error(err) is None:
                raise
            self.outage.begin("recording calls", err)
            ids = await self._write("recording calls", store.add, rows)
        for row_id, row, invocation in zip(ids, rows, invocations, strict=True):
            if not row_id:
                self.counters.inc("actions_deduplicated", action=row.action)
                continue
            row.id = row_id
            self.counters.add(self._recorded[row.action])
            self._maybe_start(row, invocation)
        self._unyielded += 1
        backlog = len(self._queues.get(rows[-1].lane, ()))
        limit = SUBMITS_PER_YIELD if self._running_ids else SUBMITS_PER_YIELD_IDLE
        if (self._unyielded >= limit or backlog >= limit) and not self.store.blocking:
            # Let the lanes' workers run what was queued.  Not after every
            # submit while the calls keep up: each turn of the loop polls the
            # selector, which releases the GIL, and a source whose client
            # library reads on its own thread (stomp.py, signalrcore) then
            # holds it while the loop waits.  After every submit once a lane
            # falls behind (a slow target): the source then goes at the pace of
            # the loop's turns instead of piling calls up behind the lane.
            self._unyielded = 0
            await anyio.lowlevel.checkpoint()

    async def bury_unrendered(self, failures: list[RenderFailure]) -> None:
        """Dead-letter calls whose templates failed, with rule, call and reason."""
        for failure in failures:
            row = Pending(
                key=idempotency_key(failure.event, failure.rule, failure.index),
                rule=failure.rule,
                action=failure.action,
                index=failure.index,
                lane=failure.action,
                params="",
                event=event_json(failure.event),
                created=self.clock(),
            )
            reason = self.secrets.redact(f"parameters did not render: {failure.reason}")
            await self._write("recording a dead letter", self.store.bury_unrendered, row, reason)
            self.counters.inc("actions", action=failure.action, outcome="dead_letter")
            self.on_settled(row, "dead_letter", reason)

    def _row(self, invocation: Invocation, now: float) -> Pending:
        spec = invocation.spec
        row = Pending(
            key=invocation.idempotency_key,
            rule=invocation.rule,
            action=invocation.action,
            index=invocation.index,
            lane=spec.target(invocation.params) if spec.target else invocation.action,
            params="",
            event="",
            created=now,
            next_at=now,
        )
        if self.store.keeps_calls:
            row.call = invocation
        else:
            params = invocation.params.model_dump_json(by_alias=True)
            row.params, row.secrets = self.secrets.seal_json(params) if self.secrets else (
                params, "")
            row.event = event_json(invocation.event)
        return row

    # -- running ----------------------------------------------------------------------

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll for due calls and run them until cancelled; cancelled calls stay recorded."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            tasks.start_soon(self._forget_delivered)
            tasks.start_soon(self._checkpoint)
            tasks.start_soon(self._watchdog)
            task_status.started()
            try:
                while True:
                    if self._next_retry <= self.clock():
                        self._next_retry = math.inf  # due: this poll fetches it
                    await self._poll()
                    wait = min(POLL_INTERVAL, max(self._next_retry - self.clock(), 0.0))
                    with anyio.move_on_after(wait):
                        await self._wakeup.wait()
                    self._wakeup = anyio.Event()
            finally:
                self._tasks = None
                with anyio.CancelScope(shield=True):
                    # what was delivered must not run again at the next start
                    await self._forget(wait=False)

    async def drain(self, within: float) -> bool:
        """Wait until no call is running (True), or ``within`` seconds pass (False).

        Calls queued in memory but not started stay recorded for the next start.
        """
        for queue in self._queues.values():
            queue.clear()  # workers hold their lane's deque: empty it, do not replace it
        self._held = set(self._running_ids)
        with anyio.move_on_after(within):
            try:
                while self._running_ids:
                    self._drained = anyio.Event()
                    await self._drained.wait()
            finally:
                self._drained = None
            await self._forget(wait=False)
            return True
        return False

    async def _forget_delivered(self) -> None:
        """Forget delivered calls in batches, one store transaction per batch."""
        while True:
            await self._delivered_some.wait()
            self._delivered_some = anyio.Event()
            self._delivered_noted = False
            await anyio.sleep(FORGET_INTERVAL)  # let a batch gather
            await self._forget()

    async def _forget(self, *, wait: bool = True) -> None:
        """Forget what was delivered; on a full disk wait for space (``wait``) or
        leave them recorded, to run once more at the next start (stopping)."""
        ids, self._delivered = self._delivered, []
        if not ids:
            return
        try:
            if wait:
                await self._write("forgetting delivered calls", self.store.done, ids)
            else:
                try:
                    await self._io(self.store.done, ids)
                except Exception as err:  # noqa: BLE001 - stopping on a full disk
                    if storage_error(err) is None:
                        raise
                    log.warning("%d delivered call(s) could not be forgotten (%s); they run "
                                "once more at the next start (receivers deduplicate by "
                                "idempotency key)", len(ids), storage_error(err))
        finally:
            self._forgetting.difference_update(ids)

    async def _write(self, what: str, func: Callable[..., Any], *args: Any) -> Any:
        """Write to the store; while the disk is full, wait for space and write again.

        The write is the same (same rows, same keys), so nothing is recorded
        twice and nothing is lost; cancellation (stopping) leaves the store as
        it was before the write.
        """
        while True:
            try:
                return await self._io(func, *args)
            except Exception as err:  # noqa: BLE001 - only a full disk is waited out
                if storage_error(err) is None:
                    raise
                self.outage.begin(what, err)
            await self.outage.wait()
            await anyio.lowlevel.checkpoint()  # the outage may begin again at once

    async def _checkpoint(self) -> None:
        """Copy the store's log back now and then, in a thread (it waits for the disk).

        On a full disk a checkpoint can fail (it may grow the database file);
        the log then stays as it is, and the next one tries again.
        """
        while True:
            await anyio.sleep(CHECKPOINT_INTERVAL)
            try:
                await anyio.to_thread.run_sync(self.store.checkpoint)
            except Exception as err:  # noqa: BLE001 - only a full disk is waited out
                if storage_error(err) is None:
                    raise

    async def _poll(self) -> None:
        room = MAX_IN_FLIGHT + MAX_QUEUED - len(self._held)
        if room <= 0:
            return
        skip = self._held | self._forgetting  # running, queued, or delivered and not yet forgotten
        # a lane with no room in memory takes nothing from this poll: behind a dead
        # target thousands of calls are due, and fetching them only to leave them again
        # would cost every poll (and every add waiting for the store) more and more
        full = frozenset(lane for lane, queue in self._queues.items()
                         if len(queue) >= LANE_BACKLOG)
        rows = await self._io(self.store.due, self.clock(), room, skip, full)
        for row in rows:
            invocation = self._revive(row)
            if invocation is not None:
                self._maybe_start(row, invocation)

    async def _io(self, func: Callable[..., Any], *args: Any) -> Any:
        """Call the store: in a worker thread when it touches the disk, else directly."""
        if self.store.blocking:
            return await anyio.to_thread.run_sync(func, *args)
        return func(*args)

    def _maybe_start(self, row: Pending, invocation: Invocation) -> None:
        """Queue a call behind its lane (starting a worker if the lane has room),
        or leave it on disk when memory is full."""
        if row.id in self._held or row.id in self._forgetting or self._tasks is None:
            # already running or queued, or delivered and not yet forgotten (the
            # poller saw it too, while submit() waited for the store), or stopping
            return
        queue = self._queues.get(row.lane)
        if queue is None:
            queue = self._queues[row.lane] = deque()
        if len(queue) >= LANE_BACKLOG or len(self._held) >= MAX_IN_FLIGHT + MAX_QUEUED:
            self._left_waiting.add(row.lane)  # stays recorded; the poller fetches it later
            return
        queue.append((row, invocation))
        self._held.add(row.id)
        self._add_worker(row.lane, row.action, queue)

    def _add_worker(self, lane: str, action: str, queue: deque[tuple[Pending, Invocation]]) -> None:
        """Start a worker for ``lane`` if calls wait there, none of its workers is free
        to take them, and the lane's concurrency allows one more.

        Called when a call is queued, and by a worker as it begins a call with
        more waiting behind it.  So a burst grows the lane one worker at a
        time, each started once the one before it is busy, rather than a
        worker per queued call up front: calls that finish without waiting
        (in-process actions) are all run by the first worker, and the others
        would only start, find the queue empty and end.
        """
        workers = self._lane_workers.get(lane, 0)
        if (
            queue
            and workers == self._lane_running.get(lane, 0)  # every worker is busy, or none exists
            and workers < self.config.for_action(action).concurrency
            and self._worker_count < MAX_IN_FLIGHT
            and self._tasks is not None
        ):
            self._lane_workers[lane] = workers + 1
            self._worker_count += 1
            self._tasks.start_soon(self._work, lane, queue)

    async def _work(self, lane: str, queue: deque[tuple[Pending, Invocation]]) -> None:
        """Run a lane's calls one after another while there are any.

        A worker outlives its call by one scheduler turn: under a steady
        stream the source queues the next call meanwhile, and reusing the
        task costs far less than starting one per call.  Likewise one cancel
        scope serves a run of calls: each call notes its deadline on it (a
        float, see :meth:`_watchdog`); a call that overruns has the scope
        cancelled, is settled as timed out, and the next call gets a fresh
        scope.
        """
        current: tuple[Pending, Invocation] | None = None  # the call in progress
        try:
            while True:
                if not queue:
                    await anyio.lowlevel.checkpoint()
                    if not queue:
                        return
                with anyio.CancelScope() as scope:
                    watched = _Watched(scope)
                    self._watched.add(watched)
                    self._watch_wanted.set()
                    try:
                        while queue:
                            paused = self._lane_paused.get(lane, 0.0) - time.monotonic()
                            if paused > 0:  # its target keeps failing: wait, then probe
                                await anyio.sleep(paused)
                                continue
                            current = row, invocation = queue.popleft()
                            self._running_ids.add(row.id)
                            self._lane_running[lane] = self._lane_running.get(lane, 0) + 1
                            if queue:  # more behind this call: a free worker to take them
                                self._add_worker(lane, row.action, queue)
                            await self._attempt(row, invocation, watched)
                            current = None
                            self._finished(lane, row, queue)
                            if scope.cancel_called:  # the deadline passed as the call returned
                                break  # the next call gets a fresh scope
                    finally:
                        self._watched.discard(watched)
                if current is not None:  # it overran its deadline (the scope caught that)
                    row, invocation = current
                    policy = self.config.for_action(row.action)
                    await self._settle(row, "retry", f"no answer within {policy.timeout:g}s",
                                       None, row.attempts + 1, policy)
                    current = None
                    self._finished(lane, row, queue)
        finally:
            if current is not None:  # cancelled from outside (stopping): stays recorded
                self._finished(lane, current[0], queue)
            self._lane_workers[lane] -= 1
            self._worker_count -= 1

    async def _watchdog(self) -> None:
        """Cancel the worker scope whose call has run past its deadline.

        One task looking every :data:`WATCHDOG_TICK` seconds instead of a
        timer per call: a timeout ends up to one tick late, and a call costs a
        float assignment instead of scheduling and cancelling a timer.
        """
        while True:
            if not self._watched:  # nothing running: no need to tick
                self._watch_wanted = anyio.Event()
                await self._watch_wanted.wait()
            await anyio.sleep(WATCHDOG_TICK)
            now = time.monotonic()
            for watched in self._watched:
                if watched.until <= now:
                    watched.scope.cancel()

    def _finished(self, lane: str, row: Pending, queue: deque[tuple[Pending, Invocation]]) -> None:
        """A call's attempt is settled: free its slot, and fetch what waits on disk."""
        self._lane_running[lane] -= 1
        self._running_ids.discard(row.id)
        self._held.discard(row.id)
        if self._drained is not None and not self._running_ids:
            self._drained.set()
        if not queue and lane in self._left_waiting:  # fetch what this lane left on disk
            # per lane: a live lane finishing calls must not wake the poller for the
            # calls a dead target's full lane left waiting (each wake-up a poll)
            self._left_waiting.discard(lane)
            self._wakeup.set()
        elif self._left_waiting and len(self._held) < MAX_IN_FLIGHT + MAX_QUEUED // 2:
            # calls were left for want of room overall, and there is room again
            if any(not self._queues.get(waiting) for waiting in self._left_waiting):
                self._left_waiting.clear()
                self._wakeup.set()

    def _revive(self, row: Pending) -> Invocation | None:
        """Rebuild a recorded call; one that can no longer run becomes a dead letter."""
        if isinstance(row.call, Invocation):
            return row.call  # kept in memory as it was recorded
        spec = self.actions.get(row.action)
        try:
            if spec is None:
                raise LookupError(f"action {row.action!r} is not installed any more")
            # the secrets' values go back in only now, as the call is about to be sent
            params = spec.params.model_validate_json(
                self.secrets.unseal_json(row.params, row.secrets)
            )
            event = Event.from_dict(json.loads(row.event), default_source="outbox")
        except (LookupError, ValidationError, ValueError) as err:
            reason = self.secrets.redact(f"cannot be run again: {err}")
            try:
                self.store.bury(row.id, reason, row.attempts)
            except Exception as full:  # noqa: BLE001 - stays in the outbox; buried later
                if storage_error(full) is None:
                    raise
                self.outage.begin("recording a dead letter", full)
                return None
            self.counters.inc("actions", action=row.action, outcome="dead_letter")
            self.on_settled(row, "dead_letter", reason)
            return None
        return Invocation(
            rule=row.rule, action=row.action, index=row.index, params=params, event=event, spec=spec
        )

    async def _attempt(self, row: Pending, invocation: Invocation, watched: _Watched) -> None:
        """Run one attempt of a call, then settle it.

        ``watched`` is the worker's scope: an attempt that overruns
        ``policy.timeout`` has it cancelled and never returns here (see :meth:`_work`).
        Running and settling are one coroutine: this runs for every call.
        """
        policy = self.config.for_action(row.action)
        attempt = row.attempts + 1
        ctx = self.context(invocation, attempt)
        retry_after: float | None = None
        result: Any = None
        started = time.monotonic()  # one clock read for the deadline and the duration
        try:
            watched.until = started + policy.timeout
            try:
                result = await invocation.spec.run(invocation.params, ctx)
            finally:
                watched.until = math.inf
            outcome, error = "ok", ""
        except PermanentActionError as err:
            outcome, error = "permanent", str(err) or type(err).__name__
        except RetryableActionError as err:
            outcome, error = "retry", str(err) or type(err).__name__
            retry_after = err.retry_after
        except TimeoutError:
            outcome, error = "retry", f"no answer within {policy.timeout:g}s"
        except Exception as err:  # a plugin's unexpected failure is retried, never fatal
            outcome, error = "retry", f"{type(err).__name__}: {err}"
        self.counters.add(self._seconds[row.action], time.monotonic() - started)
        if outcome == "ok" and not (invocation.feeds_next and self.on_result is not None):
            self._delivered_call(row)  # the common case: nothing to wait for
        elif watched.scope.cancel_called:
            # the deadline passed as the action returned: its answer counts, and
            # recording it must not be cut short by the scope's cancellation
            with anyio.CancelScope(shield=True):
                await self._record(row, invocation, outcome, error, retry_after, result,
                                   attempt, policy)
        else:
            await self._record(row, invocation, outcome, error, retry_after, result,
                               attempt, policy)

    async def _record(
        self,
        row: Pending,
        invocation: Invocation,
        outcome: str,
        error: str,
        retry_after: float | None,
        result: Any,
        attempt: int,
        policy: DeliveryPolicy,
    ) -> None:
        """What an attempt returned: the calls waiting for its result, then its outcome."""
        if outcome == "ok" and invocation.feeds_next and self.on_result is not None:
            # before the call is forgotten: a crash in between runs it again
            # instead of losing the calls that wait for its result
            await self.on_result(invocation, result)
        await self._settle(row, outcome, error, retry_after, attempt, policy)

    def _delivered_call(self, row: Pending) -> None:
        """A call succeeded: count it, and forget it now or with the next batch."""
        if self.store.forgets_each:
            # in memory: a dict pop, and the call's objects are freed while they
            # are still in the CPU's cache, not hundreds of calls later
            self.store.done([row.id])
        else:
            self._delivered.append(row.id)
            self._forgetting.add(row.id)
            if not self._delivered_noted:  # once per batch, not per call
                self._delivered_noted = True
                self._delivered_some.set()
        if row.lane in self._lane_failures:
            del self._lane_failures[row.lane]
            self._lane_paused.pop(row.lane, None)
        self.counters.add(self._succeeded[row.action])
        self.on_settled(row, "ok", "")

    async def _settle(
        self,
        row: Pending,
        outcome: str,
        error: str,
        retry_after: float | None,
        attempt: int,
        policy: DeliveryPolicy,
    ) -> None:
        store, action = self.store, row.action
        if outcome == "ok":
            self._delivered_call(row)
            return
        if self.secrets:  # stored, logged, traced: an error quoting a secret must not
            error = self.secrets.redact(error)
        delay = policy.delay(attempt, retry_after)
        limit = policy.give_up(attempt, self.clock() - row.created, delay)
        if outcome == "permanent" or limit is not None:
            why = error if outcome == "permanent" else f"{limit}; last error: {error}"
            await self._write("recording a dead letter", store.bury, row.id, why, attempt)
            self.counters.inc("actions", action=action, outcome="dead_letter")
            self.on_settled(row, "dead_letter", why)
            log.error(
                "rule %s: %s call %s is a dead letter: %s (see `ccbus dead-letters`)",
                row.rule,
                action,
                row.key,
                why,
            )
            return
        self._lane_failed(row, delay)
        retry_at = self.clock() + delay
        await self._write("recording a retry", store.retry_later, row.id, retry_at, attempt,
                          error)
        if retry_at < self._next_retry:
            # poll in time for it: a 50 ms backoff must not wait for the next regular poll
            self._next_retry = retry_at
            self._wakeup.set()
        self.counters.inc("actions", action=action, outcome="retry")
        self.on_settled(row, "retry", error)
        held_back = self._retry_log.due((row.rule, action))
        if held_back is not None:  # a dead target is retried for hours: no journal flood
            log.warning(
                "rule %s: %s attempt %d failed: %s; retrying in %.1fs%s",
                row.rule,
                action,
                attempt,
                error,
                delay,
                f" ({held_back} more failed attempt(s) of this rule's {action} calls in "
                f"the last minute, counted in ccbus_actions_total)" if held_back else "",
            )



    def _lane_failed(self, row: Pending, delay: float) -> None:
        """One more retryable failure in a row in ``row``'s lane; past
        :data:`LANE_FAILURES_TO_PAUSE`, the lane waits ``delay`` before its next call."""
        lane = row.lane
        failures = self._lane_failures[lane] = self._lane_failures.get(lane, 0) + 1
        if failures < LANE_FAILURES_TO_PAUSE:
            return
        self._lane_paused[lane] = time.monotonic() + delay
        if self._pause_log.due(lane) is not None:
            log.warning(
                "lane %s: %d attempts in a row failed; its calls wait %.1fs between "
                "attempts until one succeeds (other lanes go on; logged at most once a "
                "minute)", lane, failures, delay,
            )
