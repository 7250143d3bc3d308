"""The CUCM Connector's wire format, shared by the source, the actions and the emulator.

The guide (``cucm-connector-activemq-guide.txt``) defines:

- **Commands**: JMSType ``<Command>#<agent>`` (``Hello#<client topic>`` for
  the handshake), the arguments comma-separated in the body (an empty string
  when there are none), JMSCorrelationID, JMSReplyTo and a time-to-live.
- **Events**, in one of two patterns: the *default* one, a body
  ``[<agent>#]<Event>#<arg>#<arg>...`` with an empty JMSType, and the *JSON*
  one, an object with ``type`` and named fields.  Both are read here into one
  :class:`CucmMessage` whose fields carry the JSON pattern's names, so rules
  read ``state`` or ``connectionID`` whichever pattern the connector uses.
- **Errors**: ``<agent>#Error#<CODE>`` or ``{"type": "Error", "errorType": ...}``,
  each with the client behaviour the guide expects (:data:`ERRORS`).

The guide is loose in places; where it is, the choice made here is said next
to the code (``PREVILLEGE_VIOLATION`` as well as ``PRIVILLEGE_VIOLATION``,
``InboundCall#...`` with or without the agent in front, ``AGENT_STATE`` as
well as ``AgentState``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ccbus import decode_json

from .errors import ProtocolError

__all__ = [
    "COMMANDS",
    "ERRORS",
    "EVENT_KINDS",
    "CommandSpec",
    "CucmMessage",
    "ErrorSpec",
    "ProtocolError",
    "command_body",
    "error_spec",
    "parse_command_type",
    "parse_event",
    "render_event",
]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command of the guide and the action that sends it."""

    #: As written in JMSType before ``#``.
    command: str
    #: The action's name in rules.
    action: str
    #: The action parameters that make the body, in order, comma-separated.
    args: tuple[str, ...]
    description: str


#: Every agent command of the guide (Hello is the session's own, see the source),
#: named exactly as the guide's JMS-Type rows write it.
COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("Login", "cucm.login", (), "Log the agent's IP phone in to CUCM."),
    CommandSpec("Logout", "cucm.logout", (), "Log the agent out."),
    CommandSpec("MakeCall", "cucm.make_call", ("number",), "Dial a number from the agent's phone."),
    CommandSpec("AnswerCall", "cucm.answer_call", ("connection_id",), "Answer a ringing call."),
    CommandSpec("ReleaseCall", "cucm.release_call", ("connection_id",), "Drop a call."),
    CommandSpec("HoldCall", "cucm.hold_call", ("connection_id",), "Put a call on hold."),
    CommandSpec("RetrieveCall", "cucm.retrieve_call", ("connection_id",), "Retrieve a held call."),
    CommandSpec(
        "Transfer_sst", "cucm.blind_transfer", ("target", "connection_id"),
        "Blind (single-step) transfer of a call to another extension.",
    ),
    CommandSpec(
        "ConsultCall", "cucm.consult_call", ("target", "connection_id"),
        "Hold a call and consult another extension.",
    ),
    CommandSpec(
        "TransferCall", "cucm.transfer_call", ("connection_id",),
        "Transfer the main call to the consulted party.",
    ),
    CommandSpec(
        # the JMS-Type row spells it so (its "Command:" row says ConferenceCall): a
        # connector that compares JMSType exactly knows only the JMS-Type spelling
        "Conferencecall", "cucm.conference_call", ("connection_id",),
        "Conference the main call with the consulted party.",
    ),
    CommandSpec("GetState", "cucm.get_state", (), "Ask for the agent's and its calls' state."),
)

#: By the exact JMSType name: the emulator matches case-sensitively, as a Java connector
#: comparing strings would, so a misspelt command fails a test instead of passing it.
COMMANDS_BY_NAME = {spec.command: spec for spec in COMMANDS}


def command_body(args: list[str]) -> str:
    """The JMS body: arguments comma-separated, the empty string when there are none."""
    return ",".join(args)


def parse_command_type(jms_type: str | None) -> tuple[str, str]:
    """``("MakeCall", "1001")`` from ``MakeCall#1001`` (the emulator's side)."""
    if not jms_type or "#" not in jms_type:
        raise ProtocolError("bad_command_type", f"JMSType {jms_type!r} is not <Command>#<agent>")
    command, _, target = jms_type.partition("#")
    return command.strip(), target.strip()


# ---------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: str
    #: The guide's "Expected Client's Behaviour" says to send the request again.
    retry: bool
    summary: str


def _errors(*specs: ErrorSpec) -> dict[str, ErrorSpec]:
    return {spec.code: spec for spec in specs}


#: The documented errors.  ``retry`` follows each entry's "Expected Client's
#: Behaviour": the three that ask the *user* for another extension or other
#: credentials fail (resending the same request cannot help); every one that
#: says "send the request again" is retried by the outbox, within its
#: attempts and max_age.  A source's ``error_policy`` option overrides this.
ERRORS: dict[str, ErrorSpec] = _errors(
    ErrorSpec("MISSING_EXTENSION", False, "the extension is missing in the request"),
    ErrorSpec("WRONG_EXTENSION", False, "the extension is not valid (contains letters)"),
    ErrorSpec("USER_NOT_FOUND", False, "the agent extension is not found in CUCM"),
    ErrorSpec("GENERAL_ERROR", True, "CUCM failed for an unclear reason (Login)"),
    ErrorSpec("CF_GENERIC_UNSPECIFIED", True, "CUCM failed for an unspecified reason"),
    ErrorSpec("CF_INVALID_OBJECT_STATE", True, "the call or phone is in the wrong state"),
    ErrorSpec("PLEASE_RETRY", True, "invalid request parameters, I/O error or timeout"),
    ErrorSpec("INVALID_PARTY", True, "a party of the call (origin or destination) is invalid"),
    ErrorSpec("PRIVILLEGE_VIOLATION", True, "the connector lacks the permission for this"),
    ErrorSpec("LICENSES_EXCEEDED", True, "more agents than the connector is licensed for"),
)

#: Spellings the guide uses for the same error.
ERROR_ALIASES = {
    "PREVILLEGE_VIOLATION": "PRIVILLEGE_VIOLATION",
    "PRIVILEGE_VIOLATION": "PRIVILLEGE_VIOLATION",
}


def error_spec(code: str) -> ErrorSpec | None:
    """The documented error ``code`` names (any of its spellings), or None."""
    code = code.strip().upper()
    return ERRORS.get(ERROR_ALIASES.get(code, code))


# ---------------------------------------------------------------------------- events

#: Event kinds the guide documents (``AgentInfo`` is named as a Login answer).
EVENT_KINDS = ("System", "Terminal", "DialogState", "InboundCall", "AgentState", "AgentInfo",
               "Error")
_KIND_ALIASES = {kind.lower(): kind for kind in EVENT_KINDS} | {
    "agent_state": "AgentState",
    "state": "AgentState",
    "agent_info": "AgentInfo",
}

#: Default-pattern arguments, by kind, named as the JSON pattern names them.
#: DialogState and InboundCall carry two fields beyond the guide's table
#: (the connection id and the other party) when the connector sends them: the
#: JSON pattern has them, and call events need them.
_POSITIONAL: dict[str, tuple[str, ...]] = {
    "System": ("status",),
    "Terminal": ("status",),
    "DialogState": ("state", "stateChangeTimeString", "connectionID", "participants"),
    "InboundCall": ("State", "startTime", "participants", "Connection"),
    "AgentState": ("state", "stateChangeTimeString", "connectionID", "otherParticipants"),
    "AgentInfo": ("agentName",),
    "Error": ("errorType", "message"),
}
_LIST_FIELDS = frozenset({"participants", "otherParticipants"})


@dataclass(slots=True)
class CucmMessage:
    """One event from the connector, whichever pattern it came in."""

    #: One of :data:`EVENT_KINDS`.
    kind: str
    #: The agent (``<Event_For>``) it is about, when it names one.
    agent: str | None
    #: Named fields (the JSON pattern's names); the vendor's own doc for JSON.
    fields: dict[str, Any] = field(default_factory=dict)
    pattern: Literal["default", "json"] = "default"

    @property
    def state(self) -> str | None:
        """The state the event reports (DialogState, InboundCall, AgentState, System)."""
        for name in ("state", "State", "status"):
            value = self.fields.get(name)
            if isinstance(value, dict):  # AGENT_STATE's nested {"state": ...}
                value = value.get("state")
            if value not in (None, ""):
                return str(value)
        return None

    @property
    def connection_id(self) -> str | None:
        for name in ("connectionID", "Connection", "connectionId"):
            value = self.fields.get(name)
            if value not in (None, ""):
                return str(value)
        return None

    @property
    def participants(self) -> list[str]:
        for name in ("participants", "otherParticipants"):
            value = self.fields.get(name)
            if isinstance(value, list):
                return [str(v) for v in value]
            if value not in (None, ""):
                return [str(value)]
        return []

    @property
    def error_code(self) -> str | None:
        """For an Error: the code, from ``errorType`` or (USER_NOT_FOUND's JSON) ``message``."""
        if self.kind != "Error":
            return None
        code = self.fields.get("errorType")
        if code in (None, ""):
            message = str(self.fields.get("message") or "")
            code = message if error_spec(message) else None
        return str(code).strip().upper() if code not in (None, "") else None


def _kind(name: str) -> str | None:
    return _KIND_ALIASES.get(name.strip().lower())


def parse_event(body: str) -> CucmMessage:
    """Read one event body, default or JSON pattern; :class:`ProtocolError` if it is neither."""
    text = body.strip()
    if not text:
        raise ProtocolError("empty_body", "empty event body")
    if text.startswith("{"):
        return _parse_json(text)
    return _parse_default(text)


def _parse_json(text: str) -> CucmMessage:
    try:
        doc = decode_json(text)
    except ValueError as err:
        raise ProtocolError("bad_json", f"JSON pattern event is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("bad_json", "JSON pattern event is not an object")
    raw_type = doc.get("type")
    if not isinstance(raw_type, str) or not raw_type:
        raise ProtocolError("no_type", "JSON pattern event has no 'type'")
    kind = _kind(raw_type)
    if kind is None:
        raise ProtocolError("unknown_event", f"unknown event type {raw_type!r}")
    agent = doc.get("agentId")
    return CucmMessage(kind, str(agent) if agent not in (None, "") else None, doc, "json")


def _parse_default(text: str) -> CucmMessage:
    parts = text.split("#")
    if len(parts) < 2:
        raise ProtocolError("malformed", f"default pattern event needs '#' fields: {text[:80]!r}")
    agent: str | None = None
    kind = _kind(parts[1])
    if kind is not None:
        # <Event_For>#<Event_Type>#...: an agent, or "System" (System#Error#PLEASE_RETRY)
        who = parts[0].strip()
        agent = who if who and who.lower() != "system" else None
        args = parts[2:]
    else:
        # <Event_Type>#... without an Event_For: System#IN_SERVICE, InboundCall#ALERTING#...
        kind = _kind(parts[0])
        if kind is None:
            raise ProtocolError(
                "unknown_event", f"unknown event {parts[1][:40]!r} in {text[:80]!r}"
            )
        args = parts[1:]
    names = _POSITIONAL[kind]
    fields: dict[str, Any] = {}
    for name, value in zip(names, args, strict=False):
        if name in _LIST_FIELDS:
            fields[name] = [p.strip() for p in value.split(",") if p.strip()]
        else:
            fields[name] = value
    if len(args) > len(names):
        fields["extra"] = args[len(names):]
    if agent is not None:
        fields["agentId"] = agent
    if kind in ("System", "Error") and not fields.get(names[0]):
        raise ProtocolError("malformed", f"{kind} event without its {names[0]}: {text[:80]!r}")
    return CucmMessage(kind, agent, fields, "default")


def render_event(message: CucmMessage, pattern: Literal["default", "json"]) -> str:
    """The body the connector sends for ``message`` (the emulator's side)."""
    if pattern == "json":
        doc: dict[str, Any] = {"type": "AGENT_STATE" if message.kind == "AgentState"
                               else message.kind}
        if message.agent is not None:
            doc["agentId"] = message.agent
        doc.update({k: v for k, v in message.fields.items() if k != "agentId"})
        return json.dumps(doc, separators=(",", ":"))
    names = _POSITIONAL[message.kind]
    values = []
    for name in names:
        value = message.fields.get(name, "")
        values.append(",".join(value) if isinstance(value, list) else str(value))
    while values and values[-1] == "":
        values.pop()
    head = [message.agent] if message.agent is not None else []
    return "#".join([*head, message.kind, *values])
