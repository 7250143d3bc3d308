"""The ``cucm`` source's options and the actions' parameters (what ``ccbus check`` validates).

Every model forbids unknown keys (:class:`ccbus.Options`), so a misspelt key
is reported with file, line and a suggestion before anything connects::

    sources:
      cucm:
        plugin: cucm
        options:
          broker: {url: "stomp://amq.example.net:61613"}
          connector_queue: Connector1
"""

from __future__ import annotations

import re
from typing import Literal

from ccbus_stomp import StompOptions
from pydantic import Field, field_validator, model_validator

from ccbus import Duration, Options

from .protocol import ERRORS, error_spec

__all__ = ["CommandParams", "CucmOptions"]

#: JMS destination names we put in JMSType and headers: no separators of the protocol.
_NAME = re.compile(r"^[A-Za-z0-9._\-:/]+$")


class CucmOptions(Options):
    """One client session with one CUCM Connector."""

    #: The ActiveMQ broker the connector listens on (STOMP transport).
    broker: StompOptions = StompOptions()
    #: The queue the connector consumes commands from.
    connector_queue: str = "Connector1"
    #: The topic the connector sends our events to (``Hello#<client_topic>``).
    #: Unique per client: default ``ccbus.cucm.<source>.<host name>``.
    client_topic: str | None = None
    #: Hello is resent this often until ``System#IN_SERVICE`` (the guide: at most 3 s).
    hello_interval: Duration = 3.0
    #: While in service, a Hello this often keeps the session alive and checks it.
    keepalive_interval: Duration = 30.0
    #: Keepalive Hellos in a row without a System answer before the session counts as lost.
    keepalive_misses: int = Field(default=2, ge=1)
    #: JMS time-to-live of a command: the broker discards it after this, so a
    #: stale command is never carried out late.
    command_ttl: Duration = 10.0
    #: How long an action waits for the correlated event or error.
    answer_timeout: Duration = 10.0
    #: Wait for the broker's RECEIPT of each command before waiting for its answer.
    #: A failed send is then known at once instead of after ``answer_timeout``;
    #: the cost is a broker round trip, and with a broker that leaves Nagle on
    #: (ActiveMQ's default ``tcpNoDelay=false``) about 40 ms on every answer.
    confirm_sends: bool = False
    #: Answered commands are remembered this long (so an outbox retry never resends one).
    remember_answers: Duration = 86_400.0
    #: Override the guide's retry-or-fail for error codes: ``{INVALID_PARTY: fail}``.
    error_policy: dict[str, Literal["retry", "fail"]] = Field(default_factory=dict)

    @field_validator("connector_queue", "client_topic")
    @classmethod
    def _destination(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{value!r}: use letters, digits and . _ - : / only")
        return value

    @field_validator("error_policy")
    @classmethod
    def _codes(cls, value: dict[str, str]) -> dict[str, str]:
        for code in value:
            if error_spec(code) is None:
                known = ", ".join(ERRORS)
                raise ValueError(f"unknown error code {code!r} (documented: {known})")
        return {error_spec(code).code: policy for code, policy in value.items()}  # type: ignore[union-attr]

    @model_validator(mode="after")
    def _timings(self) -> CucmOptions:
        for name in ("hello_interval", "keepalive_interval", "command_ttl", "answer_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        return self


def _check_field(value: str, what: str, *, allow_empty: bool = False) -> str:
    """Refuse values that would change the command's shape (``#`` splits JMSType, ``,`` the body).

    Anything else (letters in an extension, an unknown number) is the
    connector's to judge: it answers with the documented error.
    """
    value = value.strip()
    if not value and not allow_empty:
        raise ValueError(f"{what} is empty")
    for bad in ("#", ",", "\x00", "\n"):
        if bad in value:
            raise ValueError(f"{what} {value!r} contains {bad!r}, which the command format uses")
    return value


class CommandParams(Options):
    """Parameters every command action takes."""

    #: The agent's extension (``<agent>`` in ``<Command>#<agent>``).
    agent: str
    #: The ``cucm`` source instance to send through; may be left out when one runs.
    source: str | None = None
    #: Wait this long for the answer instead of the source's ``answer_timeout``.
    timeout: Duration | None = None

    @field_validator("agent")
    @classmethod
    def _agent(cls, value: str) -> str:
        return _check_field(value, "agent")

    def arguments(self) -> list[str]:
        """The body's arguments, in the guide's order."""
        return []


class NumberParams(CommandParams):
    number: str

    @field_validator("number")
    @classmethod
    def _number(cls, value: str) -> str:
        return _check_field(value, "number", allow_empty=True)

    def arguments(self) -> list[str]:
        return [self.number]


class ConnectionParams(CommandParams):
    connection_id: str

    @field_validator("connection_id")
    @classmethod
    def _connection(cls, value: str) -> str:
        return _check_field(value, "connection_id", allow_empty=True)

    def arguments(self) -> list[str]:
        return [self.connection_id]


class TargetParams(ConnectionParams):
    target: str

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        return _check_field(value, "target", allow_empty=True)

    def arguments(self) -> list[str]:
        return [self.target, self.connection_id]


PARAMS: dict[tuple[str, ...], type[CommandParams]] = {
    (): CommandParams,
    ("number",): NumberParams,
    ("connection_id",): ConnectionParams,
    ("target", "connection_id"): TargetParams,
}
