"""The client side of the CUCM Connector guide: one session, its events and its commands.

A :class:`CucmSource` is both the ``cucm`` source and the way the
``cucm.*`` actions reach the connector (actions find it by name through
:func:`running_source`).  Its life:

1. Keep a STOMP connection to ActiveMQ (:class:`ccbus_stomp.StompConnection`:
   reconnect with backoff forever, subscriptions restored) and subscribe to
   the client topic (durably when the broker options carry a ``client_id``).
2. **Handshake**: send ``Hello#<client topic>`` to the connector's queue every
   ``hello_interval`` until ``System#IN_SERVICE`` arrives.  ``OUT_OF_SERVICE``
   (or silence) means: keep sending Hello.  After every broker reconnect the
   handshake starts again, since the connector may have restarted too.
3. **Keepalive**: while in service, a Hello every ``keepalive_interval``; when
   ``keepalive_misses`` of them in a row get no System answer, the session is
   lost and the handshake starts again.
4. **Events**: every message on the client topic is parsed (default or JSON
   pattern), answers the command it is correlated with, and is emitted as
   ``cucm.<Kind>`` plus canonical events (a device's status, and the
   connector's outage alerts, only when it changes), then acknowledged.
   Reading and mapping run inside ``ctx.convert``: a message that cannot be
   read (or whose mapping raises) is a dead letter in the source's
   ``dead-letters.jsonl``, counted (``ccbus_source_bad_input_total{reason=...}``),
   logged, and acknowledged: it would never read better on redelivery.
5. **Commands** (:meth:`CucmSource.command`): refused at once, with the
   reason, unless the connector is IN_SERVICE; recorded in the
   :class:`~ccbus_cucm.ledger.Ledger` before they are sent; sent as a
   TextMessage with JMSType, JMSCorrelationID, JMSReplyTo and a time-to-live;
   answered by the first correlated event (success) or error.

Source states: the broker's (``connecting``, ``reconnecting``), then
``handshaking`` (broker up, no IN_SERVICE yet), ``out_of_service`` and
``connected`` (IN_SERVICE: the only ready state).
"""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
from ccbus_stomp import NotConnectedError, StompConnection, StompMessage, queue, topic

from ccbus import (
    Event,
    PermanentActionError,
    RefusedInput,
    RetryableActionError,
    SourceContext,
)

from .ledger import Ledger
from .mapping import DeviceStatuses, to_events
from .options import CucmOptions
from .protocol import CucmMessage, command_body, error_spec, parse_event

__all__ = ["CommandResult", "CucmSource", "running_source"]

_RUNNING: dict[str, CucmSource] = {}


def running_source(name: str | None) -> CucmSource:
    """The running ``cucm`` source called ``name`` (or the only one); LookupError says why."""
    if name is not None:
        try:
            return _RUNNING[name]
        except KeyError:
            raise LookupError(f"no running cucm source named {name!r}") from None
    if len(_RUNNING) == 1:
        return next(iter(_RUNNING.values()))
    if not _RUNNING:
        raise LookupError("no cucm source is running")
    raise LookupError(
        f"several cucm sources run ({', '.join(sorted(_RUNNING))}): name one with 'source:'"
    )


@dataclass(slots=True)
class CommandResult:
    """How one command ended: the correlated answer, as the action reports it."""

    command: str
    agent: str
    arguments: list[str]
    correlation_id: str
    #: ``ok`` or ``error``.
    outcome: str
    #: The answering event's kind (``DialogState``, ``Error`` ...) and fields.
    answer_kind: str
    answer: dict[str, Any]
    elapsed_ms: float
    #: True when an earlier attempt got the answer and nothing was sent this time.
    replayed: bool = False

    @property
    def error_code(self) -> str | None:
        if self.answer_kind != "Error":
            return None
        code = self.answer.get("errorType") or self.answer.get("message")
        return str(code) if code else None

    def as_result(self) -> dict[str, Any]:
        """The answer as rule data: ``previous`` for the rule's next action, and
        the fields of the ``cucm.CommandResult`` event (absent values left out)."""
        data: dict[str, Any] = {
            "command": self.command, "agent": self.agent, "arguments": self.arguments,
            "correlationId": self.correlation_id, "outcome": self.outcome,
            "answerType": self.answer_kind, "answer": self.answer,
            "state": _state(self.answer), "connectionId": _connection(self.answer),
            "errorType": self.error_code, "elapsedMs": round(self.elapsed_ms, 3),
        }
        return {k: v for k, v in data.items() if v is not None}

    def describe(self) -> str:
        what = self.error_code or f"{self.answer_kind} {_state(self.answer) or ''}".strip()
        return f"{self.command}#{self.agent} -> {what} (correlation {self.correlation_id})"


def _state(fields: dict[str, Any]) -> str | None:
    for name in ("state", "State", "status"):
        value = fields.get(name)
        if isinstance(value, dict):
            value = value.get("state")
        if value:
            return str(value)
    return None


@dataclass(slots=True)
class _Waiter:
    command: str
    agent: str
    done: anyio.Event = field(default_factory=anyio.Event)
    message: CucmMessage | None = None


class CucmSource:
    """The ``cucm`` source: see the module docstring."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.options: CucmOptions = ctx.options
        self.log = ctx.log
        host = socket.gethostname().split(".")[0] or "host"
        self.client_topic = self.options.client_topic or f"ccbus.cucm.{ctx.name}.{host}"
        self.conn: StompConnection | None = None
        #: ``None`` until the connector said; then ``IN_SERVICE`` or ``OUT_OF_SERVICE``.
        self.service: str | None = None
        #: System answers seen (the handshake waits for this to move).
        self.system_answers = 0
        self._system_event = anyio.Event()
        self._session_generation = 0
        self._broker_state = "stopped"
        self._waiters: dict[str, _Waiter] = {}
        self.ledger: Ledger | None = None
        #: device statuses already reported: each keepalive's answer repeats the connector's
        self.devices = DeviceStatuses()
        #: hellos, commands_sent, answers, late_answers, refused, timeouts, ...; what was
        #: refused as input is in ``ctx.refusals.counts`` (and on /metrics)
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ state

    @property
    def in_service(self) -> bool:
        return self.service == "IN_SERVICE" and self.conn is not None and self.conn.connected

    def _on_broker_state(self, state: str) -> None:
        self._broker_state = state
        if state != "connected":
            self._session_lost(None)
        self._publish_state()

    def _publish_state(self) -> None:
        if self._broker_state != "connected":
            state = self._broker_state
        elif self.service == "IN_SERVICE":
            state = "connected"
        elif self.service == "OUT_OF_SERVICE":
            state = "out_of_service"
        else:
            state = "handshaking"
        self.ctx.set_state(state)

    def _session_lost(self, why: str | None) -> None:
        if self.service is not None and why:
            self.log.warning("cucm %s: session with the CUCM Connector lost (%s); sending Hello "
                             "until IN_SERVICE", self.ctx.name, why)
        self.service = None

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        if self.ctx.name in _RUNNING and _RUNNING[self.ctx.name] is not self:
            raise RuntimeError(f"cucm source {self.ctx.name!r} is already running")
        _RUNNING[self.ctx.name] = self
        self.ledger = await anyio.to_thread.run_sync(Ledger, self.ctx.state_dir / "commands.db")
        try:
            await anyio.to_thread.run_sync(self.ledger.prune, self.options.remember_answers)
            async with StompConnection(
                self.options.broker, name=self.ctx.name, log=self.log,
                set_state=self._on_broker_state,
            ) as conn:
                self.conn = conn
                durable = self.client_topic if self.options.broker.client_id else None
                await conn.subscribe(topic(self.client_topic), durable_name=durable)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._session)
                    tg.start_soon(self._prune)
                    async for message in conn:
                        await self._handle(message)
                        await conn.ack(message)
        finally:
            if _RUNNING.get(self.ctx.name) is self:
                del _RUNNING[self.ctx.name]
            self.conn = None
            self.service = None
            for waiter in self._waiters.values():
                waiter.done.set()  # no message: the command sees "source stopped"
            ledger, self.ledger = self.ledger, None
            if ledger is not None:
                ledger.close()

    async def _prune(self) -> None:
        while True:
            await anyio.sleep(3600)
            if self.ledger is not None:
                await anyio.to_thread.run_sync(self.ledger.prune, self.options.remember_answers)

    async def _session(self) -> None:
        """Handshake and keepalive, forever (see the module docstring)."""
        assert self.conn is not None
        conn = self.conn
        misses = 0
        while True:
            await conn.wait_connected()
            if conn.generation != self._session_generation:
                self._session_generation = conn.generation
                self._session_lost("broker reconnected")
                self._publish_state()
                misses = 0
            was_in_service = self.service == "IN_SERVICE"
            seen = self.system_answers
            event = self._system_event
            sent_at = time.monotonic()
            try:
                await conn.send(
                    queue(self.options.connector_queue), "",
                    type=f"Hello#{self.client_topic}",
                    correlation_id=f"hello-{uuid.uuid4().hex[:12]}",
                    reply_to=topic(self.client_topic),
                    ttl=self.options.command_ttl,
                    persistent=False,
                )
                self.stats["hellos"] += 1
            except NotConnectedError as err:
                self.log.info("cucm %s: Hello not sent: %s", self.ctx.name, err)
                await anyio.sleep(self.options.hello_interval)
                continue
            with anyio.move_on_after(self.options.hello_interval):
                await event.wait()
            answered = self.system_answers > seen
            if was_in_service:
                misses = 0 if answered else misses + 1
                if misses:
                    self.stats["keepalive_missed"] += 1
                if misses >= self.options.keepalive_misses and self.service == "IN_SERVICE":
                    self._session_lost(f"{misses} keepalive Hello(s) unanswered")
                    self._publish_state()
                    misses = 0
            elif not answered:
                self.stats["hello_unanswered"] += 1
                self.log.info("cucm %s: no answer to Hello#%s on queue %s yet; sending it again",
                              self.ctx.name, self.client_topic, self.options.connector_queue)
            if self.service == "IN_SERVICE":
                pause = self.options.keepalive_interval
            else:  # OUT_OF_SERVICE or silence: Hello again, every hello_interval
                pause = self.options.hello_interval
            with anyio.move_on_after(max(0.0, sent_at + pause - time.monotonic())):
                # a broker loss or a change of service ends the pause early
                status = self.service
                while conn.connected and self.service == status:  # noqa: ASYNC110
                    await anyio.sleep(0.1)

    # ------------------------------------------------------------------ receiving

    async def _handle(self, message: StompMessage) -> None:
        """Read, map and emit one message from the client topic (the caller acks it).

        Reading and mapping run inside ``ctx.convert``: whatever they raise (a
        :class:`ProtocolError`, a body that is not text, a bug in the mapping on one
        payload) makes the message a dead letter, counted by reason on ``/metrics``,
        and it is acknowledged like any other: it would never read better on
        redelivery.  The session (System answers, command answers) and ``emit``
        stay outside: a failure to record the events is the bus's, not the message's.
        """
        received = datetime.now(UTC)
        read = await self.ctx.convert(
            message.body, lambda: self._read(message, received),
            destination=message.destination, message_id=message.message_id,
        )
        if read is None:
            return
        parsed, events = read
        if parsed.kind == "System":
            self._system(parsed)
        await self._correlate(parsed, message)
        for event in events:
            await self.ctx.emit(event)
        self.devices.record(events)

    def _read(self, message: StompMessage, received: datetime
              ) -> tuple[CucmMessage, list[Event]]:
        """The event in ``message`` and the ccbus events it maps to; RefusedInput says why not."""
        try:
            text = message.text()
        except UnicodeDecodeError as err:
            # text() reads UTF-8 and the modified UTF-8 of a Java TextMessage (emoji as
            # surrogate halves, NUL as C0 80): what is left is really broken
            raise RefusedInput(
                "not_utf8", f"body is neither UTF-8 nor Java's modified UTF-8: {err}"
            ) from None
        parsed = parse_event(text)  # a ProtocolError is a RefusedInput: a dead letter
        events = to_events(
            parsed, source=self.ctx.name, message_id=message.message_id or uuid.uuid4().hex,
            received=received, raw=text, devices=self.devices,
        )
        return parsed, events

    def _system(self, parsed: CucmMessage) -> None:
        status = (parsed.state or "").upper()
        if status not in ("IN_SERVICE", "OUT_OF_SERVICE"):
            self.log.warning("cucm %s: System event with unknown status %r", self.ctx.name, status)
            return
        if status != self.service:
            if status == "IN_SERVICE":
                self.log.info("cucm %s: CUCM Connector is IN_SERVICE (client topic %s)",
                              self.ctx.name, self.client_topic)
            else:
                self.log.warning("cucm %s: CUCM Connector is OUT_OF_SERVICE: commands are refused "
                                 "until it is back", self.ctx.name)
        self.service = status
        self.system_answers += 1
        event, self._system_event = self._system_event, anyio.Event()
        event.set()
        self._publish_state()

    async def _correlate(self, parsed: CucmMessage, message: StompMessage) -> None:
        cid = message.correlation_id
        waiter = self._waiters.get(cid) if cid else None
        if waiter is None and cid is None and parsed.kind == "Error" and parsed.agent:
            # an uncorrelated error answers the one command pending for its agent, if only one
            mine = [(k, w) for k, w in self._waiters.items()
                    if w.agent == parsed.agent and w.message is None]
            if len(mine) == 1:
                cid, waiter = mine[0]
        if cid and not cid.startswith("hello-") and self.ledger is not None:
            # recorded before the action hears it: a retry after this finds the answer
            outcome = "error" if parsed.kind == "Error" else "ok"
            recorded = await anyio.to_thread.run_sync(
                self.ledger.answered, cid, outcome, {"kind": parsed.kind, **parsed.fields}
            )
            if recorded and waiter is None:
                self.stats["late_answers"] += 1
                self.log.info("cucm %s: late answer %s to command %s recorded; a retry will not "
                              "resend it", self.ctx.name, parsed.kind, cid)
        if waiter is not None and waiter.message is None:
            waiter.message = parsed
            waiter.done.set()

    # ------------------------------------------------------------------ commands

    async def command(
        self,
        command: str,
        agent: str,
        arguments: list[str],
        *,
        key: str,
        wait_for: float | None = None,
    ) -> CommandResult:
        """Send ``command`` for ``agent`` once per idempotency ``key`` and wait for its answer.

        Returns the answer, an error answer included (see :meth:`judge`); raises
        :class:`RetryableActionError` when the command was refused (not in
        service, broker away) or got no answer in time.
        """
        name = f"{command}#{agent}"
        ledger = self.ledger
        if ledger is None:
            raise RetryableActionError(f"cucm {self.ctx.name}: source is starting; {name} not sent")
        started = time.monotonic()
        previous = await anyio.to_thread.run_sync(ledger.get, key)
        if previous is not None and previous.outcome == "ok" and previous.answer is not None:
            self.stats["replayed"] += 1
            answer = dict(previous.answer)
            return CommandResult(command, agent, arguments, previous.correlation_id, "ok",
                                 str(answer.pop("kind", "")), answer, 0.0, replayed=True)
        pending = previous is not None and previous.answered_at is None
        if previous is not None and pending and previous.expires_at > time.time():
            # an earlier attempt's command may still be carried out: wait for its answer
            self.stats["waited_for_earlier"] += 1
            wait = previous.expires_at - time.time() + 0.5
            self.log.info("cucm %s: %s was sent %.1fs ago and has not expired; waiting %.1fs for "
                          "its answer instead of sending it again", self.ctx.name, name,
                          time.time() - previous.sent_at, wait)
            result = await self._await_answer(previous.correlation_id, command, agent,
                                              arguments, wait, started, late_ok=True)
            if result is not None:
                return result
        if not self.in_service:
            self.stats["refused"] += 1
            why = ("the broker connection is down" if self.conn is None or not self.conn.connected
                   else "the CUCM Connector is OUT_OF_SERVICE" if self.service == "OUT_OF_SERVICE"
                   else "the CUCM Connector has not answered Hello with IN_SERVICE yet")
            raise RetryableActionError(f"cucm {self.ctx.name}: {name} not sent: {why}")
        assert self.conn is not None
        correlation_id = _correlation_id(key)
        await anyio.to_thread.run_sync(ledger.sending, key, correlation_id, name,
                                       self.options.command_ttl)
        waiter = self._waiters[correlation_id] = _Waiter(command, agent)
        try:
            try:
                await self.conn.send(
                    queue(self.options.connector_queue), command_body(arguments), type=name,
                    correlation_id=correlation_id, reply_to=topic(self.client_topic),
                    ttl=self.options.command_ttl, receipt=self.options.confirm_sends,
                )
            except NotConnectedError as err:
                raise RetryableActionError(
                    f"cucm {self.ctx.name}: {name} not sent: {err}"
                ) from None
            self.stats["commands_sent"] += 1
            wait = wait_for if wait_for is not None else self.options.answer_timeout
            result = await self._await_answer(correlation_id, command, agent, arguments, wait,
                                              started, waiter=waiter)
        finally:
            self._waiters.pop(correlation_id, None)
        if result is None:
            self.stats["timeouts"] += 1
            raise RetryableActionError(
                f"cucm {self.ctx.name}: no answer to {name} (correlation {correlation_id}) "
                f"within {wait:g}s"
            )
        return result

    async def _await_answer(
        self, correlation_id: str, command: str, agent: str, arguments: list[str],
        wait: float, started: float, *, waiter: _Waiter | None = None, late_ok: bool = False,
    ) -> CommandResult | None:
        own = waiter is None
        if waiter is None:
            waiter = self._waiters.setdefault(correlation_id, _Waiter(command, agent))
        try:
            with anyio.move_on_after(wait):
                await waiter.done.wait()
        finally:
            if own:
                self._waiters.pop(correlation_id, None)
        message = waiter.message
        if message is None and late_ok and self.ledger is not None:
            # answered while nobody waited (before a restart, say): the ledger has it
            sent = await anyio.to_thread.run_sync(self.ledger.get_by_correlation, correlation_id)
            if sent is not None and sent.answer is not None:
                answer = dict(sent.answer)
                kind = str(answer.pop("kind", ""))
                message = CucmMessage(kind, agent, answer)
        if message is None:
            if self.conn is None:
                raise RetryableActionError(f"cucm {self.ctx.name}: source stopped while "
                                           f"{command}#{agent} waited for its answer")
            return None
        self.stats["answers"] += 1
        outcome = "error" if message.kind == "Error" else "ok"
        return CommandResult(command, agent, arguments, correlation_id, outcome, message.kind,
                             dict(message.fields), (time.monotonic() - started) * 1000)

    def judge(self, result: CommandResult) -> CommandResult:
        """Success, or the documented error as a retryable or permanent failure."""
        if result.outcome == "ok":
            return result
        code = CucmMessage("Error", result.agent, result.answer).error_code or "UNKNOWN"
        spec = error_spec(code)
        name = f"{result.command}#{result.agent}"
        if spec is None:
            self.stats["unknown_errors"] += 1
            raise PermanentActionError(
                f"cucm {self.ctx.name}: the CUCM Connector answered {name} with an undocumented "
                f"error {code!r} (correlation {result.correlation_id})"
            )
        policy = self.options.error_policy.get(spec.code)
        retry = spec.retry if policy is None else policy == "retry"
        message = (f"cucm {self.ctx.name}: the CUCM Connector answered {name} with {spec.code}: "
                   f"{spec.summary} (correlation {result.correlation_id})")
        if retry:
            raise RetryableActionError(message)
        raise PermanentActionError(message)

    async def emit_result(self, result: CommandResult, *, rule: str, action: str, key: str,
                          event: Event) -> None:
        """Raise ``cucm.CommandResult`` on the bus: rules chain on it (see the README)."""
        await self.ctx.emit(Event(
            type="cucm.CommandResult", source=self.ctx.name,
            id=f"{key}:result:{result.correlation_id}", subject=result.agent,
            data={**result.as_result(), "rule": rule, "action": action}, vendor="cucm",
            extensions={"derivedfrom": event.id, "derivedby": rule},
        ))


def _connection(fields: dict[str, Any]) -> str | None:
    for name in ("connectionID", "Connection", "connectionId"):
        value = fields.get(name)
        if value not in (None, ""):
            return str(value)
    return None


def _correlation_id(key: str) -> str:
    """Per send: the call's key, hashed (short, no separators), and a fresh suffix."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"ccbus-{digest}-{uuid.uuid4().hex[:8]}"
