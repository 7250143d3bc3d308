"""A CUCM Connector emulator: consumes queue ``Connector1`` and answers as the guide says.

Used by the tests, the benchmark and ``ccbus simulate cucm``.  It talks to a
real ActiveMQ through the same STOMP transport as the source, so everything
between the two is the broker's real behaviour (JMS headers, TTL, topics).

What it does:

- ``Hello#<topic>``: answers ``System#IN_SERVICE`` (or ``OUT_OF_SERVICE``
  when :meth:`CucmEmulator.set_in_service` turned it off) on ``<topic>``, and
  remembers the client; a change of service is sent to every client.
- While out of service, every other command is dropped unanswered (the
  guide: the connector "will stop receiving further commands").
- ``Login``: a known extension (``directory``) gets AgentInfo, AgentState
  ``LOGIN`` then ``READY``, and DialogState ``IDLE``; an empty one
  ``MISSING_EXTENSION``, one with letters ``WRONG_EXTENSION``, an unknown one
  ``USER_NOT_FOUND``.
- Calls: ``MakeCall`` (DialogState INITIATING then ACTIVE), ``AnswerCall``,
  ``HoldCall``/``RetrieveCall``, ``ReleaseCall``, ``Transfer_sst``,
  ``ConsultCall`` then ``TransferCall`` or ``Conferencecall``, ``GetState``;
  a command on a call in the wrong state gets ``CF_INVALID_OBJECT_STATE``, a
  bad destination ``INVALID_PARTY``.  :meth:`ring` offers an inbound call.
- Command names are matched exactly as the guide's JMS-Type rows spell
  them (``Conferencecall``, ``Transfer_sst``): another spelling is an
  unknown command, answered ``PLEASE_RETRY``.
- Faults for tests: :meth:`fail_next` (answer the next command with an
  error), ``delay`` (answer late), ``silent`` (consume, never answer).

Every answer carries the command's JMSCorrelationID and goes to its
JMSReplyTo; follow-up events (the call turning ACTIVE) are uncorrelated.
Events are sent in the ``default`` (``#``) or ``json`` pattern.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup
from ccbus_stomp import StompConnection, StompMessage, StompOptions, queue, topic

from .errors import ProtocolError
from .protocol import COMMANDS_BY_NAME, CucmMessage, parse_command_type, render_event

__all__ = ["CucmEmulator", "parse_agents"]

log = logging.getLogger("ccbus.simulate.cucm")


def parse_agents(text: str) -> list[str]:
    """``"1001-1005,2001"`` -> the extensions it names."""
    agents: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            low, high = part.split("-", 1)
            width = len(low)
            agents += [str(n).zfill(width) for n in range(int(low), int(high) + 1)]
        else:
            agents.append(part)
    return agents


@dataclass(slots=True)
class Call:
    id: str
    agent: str
    other: str
    direction: str
    state: str
    #: For a consult call: the main call it consults about.
    main: str | None = None


@dataclass(slots=True)
class Agent:
    extension: str
    client: str
    state: str = "READY"
    calls: dict[str, Call] = field(default_factory=dict)


class _Answer(Exception):
    """Raised inside a command handler to answer with an error code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class CucmEmulator:
    """See the module docstring.  ``async with CucmEmulator(url) as emulator: ...``"""

    def __init__(
        self,
        broker: str | StompOptions,
        *,
        connector_queue: str = "Connector1",
        pattern: Literal["default", "json"] = "default",
        directory: Iterable[str] = parse_agents("1001-1020"),
        invalid_parties: Iterable[str] = ("0000",),
        answer_after: float = 0.05,
        name: str = "cucm-emulator",
    ) -> None:
        self.options = (broker if isinstance(broker, StompOptions)
                        else StompOptions(url=broker, backoff_initial=0.1, backoff_cap=1.0))
        self.connector_queue = connector_queue
        self.pattern = pattern
        self.directory = set(directory)
        self.invalid_parties = set(invalid_parties)
        #: Delay before a dialled call turns ACTIVE.
        self.answer_after = answer_after
        self.name = name
        self.in_service = True
        #: Answer every command this much later (tests of timeouts and late answers).
        self.delay = 0.0
        #: Consume commands and never answer.
        self.silent = False
        self.clients: set[str] = set()
        self.agents: dict[str, Agent] = {}
        #: commands by name, errors by code, hellos, dropped, malformed ...
        self.stats: Counter[str] = Counter()
        #: Every command received: (JMSType, body, correlation id, reply-to).
        self.received: list[tuple[str, str, str | None, str | None]] = []
        self._fail: list[tuple[str | None, str]] = []
        self._ids = itertools.count(52129051)
        self._conn: StompConnection | None = None
        self._tg: TaskGroup | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> CucmEmulator:
        self._conn = StompConnection(self.options, name=self.name, log=log)
        await self._conn.__aenter__()
        await self._conn.subscribe(queue(self.connector_queue))
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._serve)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._tg is not None and self._conn is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        await self._conn.__aexit__(exc_type, exc, tb)

    async def wait_connected(self, within: float = 60.0) -> None:
        assert self._conn is not None
        await self._conn.wait_connected(within)

    @property
    def connection(self) -> StompConnection:
        assert self._conn is not None
        return self._conn

    # ------------------------------------------------------------------ controls

    async def set_in_service(self, up: bool) -> None:
        """Change service and tell every client that said Hello."""
        self.in_service = up
        status = "IN_SERVICE" if up else "OUT_OF_SERVICE"
        for client in sorted(self.clients):
            await self._send(topic(client), CucmMessage("System", None, {"status": status}))

    def fail_next(self, code: str, *, command: str | None = None) -> None:
        """Answer the next command (or the next ``command``) with error ``code``."""
        self._fail.append((command.lower() if command else None, code))

    async def ring(self, agent: str, caller: str) -> str:
        """Offer an inbound call from ``caller`` to logged-in ``agent``; its connection id."""
        session = self.agents[agent]
        call = Call(str(next(self._ids)), agent, caller, "inbound", "ALERTING")
        session.calls[call.id] = call
        dest = topic(session.client)
        await self._send(dest, self._inbound(call))
        await self._send(dest, self._dialog(call))
        return call.id

    def commands(self, name: str) -> int:
        """How many ``name`` commands arrived (any agent)."""
        return self.stats[f"command:{name.lower()}"]

    # ------------------------------------------------------------------ serving

    async def _serve(self) -> None:
        assert self._conn is not None and self._tg is not None
        async for message in self._conn:
            await self._conn.ack(message)
            if self.delay:
                self._tg.start_soon(self._later, message)
            else:
                await self._handle(message)

    async def _later(self, message: StompMessage) -> None:
        await anyio.sleep(self.delay)
        await self._handle(message)

    async def _handle(self, message: StompMessage) -> None:
        try:
            body = message.text()
            command, target = parse_command_type(message.type)
        except (ProtocolError, UnicodeDecodeError) as err:
            self.stats["malformed"] += 1
            log.warning("cucm emulator: dropped a command: %s", err)
            return
        self.received.append((message.type or "", body, message.correlation_id,
                              message.reply_to))
        self.stats[f"command:{command.lower()}"] += 1
        if command == "Hello":
            await self._hello(target, message)
            return
        if not self.in_service:
            self.stats["dropped_out_of_service"] += 1
            return
        if self.silent:
            self.stats["ignored_silent"] += 1
            return
        reply_to = message.reply_to or (topic(self.agents[target].client)
                                        if target in self.agents else None)
        if reply_to is None:
            self.stats["no_reply_to"] += 1
            log.warning("cucm emulator: %s has no JMSReplyTo and no logged-in agent", message.type)
            return
        correlation = message.correlation_id
        args = [a.strip() for a in body.split(",")] if body else []
        try:
            forced = self._forced(command)
            if forced:
                raise _Answer(forced)
            spec = COMMANDS_BY_NAME.get(command)  # exactly as the guide spells it
            if spec is None:
                self.stats["unknown_command"] += 1
                raise _Answer("PLEASE_RETRY")
            handler = getattr(self, f"_cmd_{spec.command.lower()}")
            events: list[CucmMessage] = await handler(target, args, reply_to)
        except _Answer as answer:
            self.stats[f"error:{answer.code}"] += 1
            events = [CucmMessage("Error", target or None, {"errorType": answer.code})]
        first, *rest = events
        await self._send(reply_to, first, correlation)
        for event in rest:
            await self._send(reply_to, event, correlation)

    def _forced(self, command: str) -> str | None:
        for i, (only, code) in enumerate(self._fail):
            if only is None or only == command.lower():
                del self._fail[i]
                return code
        return None

    async def _hello(self, client: str, message: StompMessage) -> None:
        self.stats["hellos"] += 1
        if not client:
            self.stats["malformed"] += 1
            return
        self.clients.add(client)
        status = "IN_SERVICE" if self.in_service else "OUT_OF_SERVICE"
        await self._send(topic(client), CucmMessage("System", None, {"status": status}),
                         message.correlation_id)

    async def _send(self, destination: str, event: CucmMessage,
                    correlation_id: str | None = None) -> None:
        assert self._conn is not None
        try:
            await self._conn.send(destination, render_event(event, self.pattern),
                                  correlation_id=correlation_id, persistent=False,
                                  wait_connected=5.0)
            self.stats["events_sent"] += 1
        except ConnectionError as err:
            self.stats["send_failed"] += 1
            log.warning("cucm emulator: event not sent to %s: %s", destination, err)

    # ------------------------------------------------------------------ events

    @staticmethod
    def _now() -> str:
        return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _agent_state(self, agent: Agent) -> CucmMessage:
        return CucmMessage("AgentState", agent.extension,
                           {"state": agent.state, "stateChangeTimeString": self._now()})

    def _dialog(self, call: Call) -> CucmMessage:
        return CucmMessage("DialogState", call.agent, {
            "state": call.state, "stateChangeTimeString": self._now(),
            "connectionID": call.id, "participants": [call.other],
        })

    def _inbound(self, call: Call) -> CucmMessage:
        return CucmMessage("InboundCall", call.agent, {
            "State": call.state, "startTime": self._now(), "participants": [call.other],
            "Connection": call.id,
        })

    def _session(self, extension: str) -> Agent:
        self._check_extension(extension)
        session = self.agents.get(extension)
        if session is None:
            raise _Answer("CF_INVALID_OBJECT_STATE")  # not logged in
        return session

    def _check_extension(self, extension: str) -> None:
        if not extension:
            raise _Answer("MISSING_EXTENSION")
        if not extension.isdigit():
            raise _Answer("WRONG_EXTENSION")

    def _check_party(self, number: str) -> None:
        self._check_extension(number)
        if number in self.invalid_parties or len(number) < 3:
            raise _Answer("INVALID_PARTY")

    def _call(self, session: Agent, args: list[str], index: int, *states: str) -> Call:
        if len(args) <= index or not args[index]:
            raise _Answer("PLEASE_RETRY")  # invalid request params
        call = session.calls.get(args[index])
        if call is None or (states and call.state not in states):
            raise _Answer("CF_INVALID_OBJECT_STATE")
        return call

    def _talking(self, session: Agent) -> CucmMessage:
        live = [c for c in session.calls.values() if c.state in ("ACTIVE", "INITIATING")]
        session.state = "TALKING" if live else ("HOLD" if session.calls else "READY")
        return self._agent_state(session)

    def _drop(self, session: Agent, call: Call, state: str = "DROPPED") -> list[CucmMessage]:
        call.state = state
        events = [self._dialog(call)]
        if call.direction == "inbound":
            events.append(self._inbound(call))
        if state != "DROPPED":
            call.state = "DROPPED"
            events.append(self._dialog(call))
        session.calls.pop(call.id, None)
        return events

    # ------------------------------------------------------------------ commands

    async def _cmd_login(self, extension: str, args: list[str], reply_to: str) -> list[CucmMessage]:
        self._check_extension(extension)
        if extension not in self.directory:
            raise _Answer("USER_NOT_FOUND")
        client = args[0] if args and args[0] else reply_to.rsplit("/", 1)[-1]
        session = self.agents[extension] = Agent(extension, client, "LOGIN")
        events = [CucmMessage("AgentInfo", extension, {"agentName": f"Agent {extension}"}),
                  self._agent_state(session)]
        session.state = "READY"
        events += [self._agent_state(session),
                   CucmMessage("DialogState", extension,
                               {"state": "IDLE", "stateChangeTimeString": self._now()})]
        return events

    async def _cmd_logout(self, extension: str, args: list[str], reply_to: str
                          ) -> list[CucmMessage]:
        session = self._session(extension)
        if session.calls:
            raise _Answer("CF_INVALID_OBJECT_STATE")
        del self.agents[extension]
        session.state = "LOGOUT"
        return [self._agent_state(session)]

    async def _cmd_makecall(self, extension: str, args: list[str], reply_to: str
                            ) -> list[CucmMessage]:
        session = self._session(extension)
        number = args[0] if args else ""
        self._check_party(number)
        call = Call(str(next(self._ids)), extension, number, "outbound", "INITIATING")
        session.calls[call.id] = call
        assert self._tg is not None
        self._tg.start_soon(self._connect_later, session, call)
        return [self._dialog(call), self._talking(session)]

    async def _connect_later(self, session: Agent, call: Call) -> None:
        await anyio.sleep(self.answer_after)
        if call.state == "INITIATING" and call.id in session.calls:
            call.state = "ACTIVE"
            await self._send(topic(session.client), self._dialog(call))

    async def _cmd_answercall(self, extension: str, args: list[str], reply_to: str
                              ) -> list[CucmMessage]:
        session = self._session(extension)
        call = self._call(session, args, 0, "ALERTING")
        call.state = "ACTIVE"
        return [self._dialog(call), self._inbound(call), self._talking(session)]

    async def _cmd_releasecall(self, extension: str, args: list[str], reply_to: str
                               ) -> list[CucmMessage]:
        session = self._session(extension)
        call = self._call(session, args, 0)
        events = self._drop(session, call)
        return [*events, self._talking(session)]

    async def _cmd_holdcall(self, extension: str, args: list[str], reply_to: str
                            ) -> list[CucmMessage]:
        session = self._session(extension)
        call = self._call(session, args, 0, "ACTIVE")
        call.state = "HELD"
        return [self._dialog(call), self._talking(session)]

    async def _cmd_retrievecall(self, extension: str, args: list[str], reply_to: str
                                ) -> list[CucmMessage]:
        session = self._session(extension)
        call = self._call(session, args, 0, "HELD")
        call.state = "ACTIVE"
        return [self._dialog(call), self._talking(session)]

    async def _cmd_transfer_sst(self, extension: str, args: list[str], reply_to: str
                                ) -> list[CucmMessage]:
        session = self._session(extension)
        target = args[0] if args else ""
        self._check_party(target)
        call = self._call(session, args, 1, "ACTIVE", "HELD")
        call.other = target
        return [*self._drop(session, call, "TRANSFERRED"), self._talking(session)]

    async def _cmd_consultcall(self, extension: str, args: list[str], reply_to: str
                               ) -> list[CucmMessage]:
        session = self._session(extension)
        target = args[0] if args else ""
        self._check_party(target)
        main = self._call(session, args, 1, "ACTIVE", "HELD")
        main.state = "HELD"
        consult = Call(str(next(self._ids)), extension, target, "outbound", "INITIATING",
                       main=main.id)
        session.calls[consult.id] = consult
        assert self._tg is not None
        self._tg.start_soon(self._connect_later, session, consult)
        return [self._dialog(main), self._dialog(consult), self._talking(session)]

    def _consult_of(self, session: Agent, main: Call) -> Call:
        for call in session.calls.values():
            if call.main == main.id and call.state == "ACTIVE":
                return call
        raise _Answer("CF_INVALID_OBJECT_STATE")  # nobody consulted (or not answered yet)

    async def _cmd_transfercall(self, extension: str, args: list[str], reply_to: str
                                ) -> list[CucmMessage]:
        session = self._session(extension)
        main = self._call(session, args, 0, "HELD", "ACTIVE")
        consult = self._consult_of(session, main)
        main.other = consult.other
        events = self._drop(session, main, "TRANSFERRED") + self._drop(session, consult)
        return [*events, self._talking(session)]

    async def _cmd_conferencecall(self, extension: str, args: list[str], reply_to: str
                                  ) -> list[CucmMessage]:
        session = self._session(extension)
        main = self._call(session, args, 0, "HELD", "ACTIVE")
        consult = self._consult_of(session, main)
        parties = [main.other, consult.other]
        main.state = "CONFERENCED"
        conference = self._dialog(main)
        conference.fields["participants"] = parties
        main.state = "ACTIVE"
        consult.state = "DROPPED"
        events = [conference, self._dialog(consult)]
        session.calls.pop(consult.id, None)
        return [*events, self._talking(session)]

    async def _cmd_getstate(self, extension: str, args: list[str], reply_to: str
                            ) -> list[CucmMessage]:
        session = self._session(extension)
        return [self._agent_state(session), *(self._dialog(c) for c in session.calls.values())]

    def snapshot(self) -> dict[str, Any]:
        """What the emulator holds, for ``status`` output and tests."""
        return {
            "in_service": self.in_service,
            "clients": sorted(self.clients),
            "agents": {a.extension: {"state": a.state,
                                     "calls": {c.id: c.state for c in a.calls.values()}}
                       for a in self.agents.values()},
        }
