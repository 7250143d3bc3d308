"""The options of a ``genesys`` source, as written under ``options:`` in the config.

Only ``bootstrap_servers`` is required.  The model refuses unknown keys, so
``ccbus check`` names a misspelt one with file, line and a suggestion before
anything connects; inconsistent security settings (SASL without a password,
a client key without its certificate) are refused the same way, because a
broker would only say "disconnected" about them.  Timings are
:data:`ccbus.Duration` values (``30s``, ``5m`` or seconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ccbus import Duration, Options

from .catalogue import AGENT_STATE, CALL_THREAD

__all__ = ["GenesysOptions"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class GenesysOptions(Options):
    """Options of one ``genesys`` source instance (the plugin README explains each)."""

    #: ``host:port`` of one or more brokers: a list, or one comma-separated string.
    bootstrap_servers: list[str]
    #: Consumer group.  Genesys asks not to use ``callthread``.
    group_id: str = "ccbus"
    client_id: str = "ccbus-genesys"
    #: Put in front of both topic names (``prod-`` -> ``prod-voice-agentstate``).
    topic_prefix: str = ""
    #: The agent-state topic's name without the prefix; null to not consume it.
    agent_state_topic: str | None = "voice-agentstate"
    #: The call-thread topic's name without the prefix; null to not consume it.
    call_thread_topic: str | None = "voice-callthread"
    #: Where a group without a committed offset starts: ``latest`` (new events
    #: only) or ``earliest`` (everything the topic still holds).  ``latest`` by
    #: default: on a production topic, ``earliest`` would run every rule on days
    #: of old events at the first start (callbacks for calls long over).
    auto_offset_reset: Literal["earliest", "latest"] = "latest"

    #: The payload field naming the event.  Genesys's own sample is
    #: ``{"id": "EventAgentLogin", "AgentID": ..., ...}``, hence ``id``.
    event_field: str = "id"
    #: Only these tenants (the part of the key before ``:``); empty: every tenant.
    tenants: list[str] = Field(default_factory=list)
    #: How many call threads the canonical mapping remembers (oldest forgotten first).
    max_tracked_calls: int = Field(default=10_000, gt=0)

    security_protocol: SecurityProtocol = "PLAINTEXT"
    #: CA bundle to verify the brokers with (default: the system's).
    ssl_cafile: str | None = None
    #: Client certificate and key, for brokers that require mutual TLS.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    #: Check that the broker's certificate names the host connected to.
    ssl_check_hostname: bool = True
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None

    #: The group drops a consumer silent for this long (heartbeats are sent every
    #: ``heartbeat_interval``).
    session_timeout: Duration = 10.0
    heartbeat_interval: Duration = 3.0
    #: Longest time between two polls before the group gives the partitions away.
    max_poll_interval: Duration = 300.0
    #: Records handed over per poll (at most); offsets are committed after each poll.
    max_poll_records: int = Field(default=500, gt=0)
    #: How long a fetch waits at the broker for data.
    fetch_max_wait: Duration = 0.5
    #: Timeout of each request to a broker.
    request_timeout: Duration = 40.0
    #: First reconnect delay; doubles (with jitter) up to backoff_cap.
    backoff_initial: Duration = 0.5
    backoff_cap: Duration = 60.0

    @field_validator("bootstrap_servers", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one host:port")
        for server in value:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GenesysOptions:
        if not self.topics():
            raise ValueError(
                "both agent_state_topic and call_thread_topic are null: nothing to read"
            )
        if self.group_id == "callthread":
            raise ValueError("Genesys asks consumers not to use the group name 'callthread'")
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and (not self.sasl_mechanism or not self.sasl_username or not self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password"
            )
        if not sasl and self.sasl_mechanism:
            raise ValueError(
                "sasl_mechanism is set but security_protocol is "
                f"{self.security_protocol} (use SASL_SSL or SASL_PLAINTEXT)"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("ssl_keyfile needs ssl_certfile")
        if self.heartbeat_interval >= self.session_timeout:
            raise ValueError("heartbeat_interval must be shorter than session_timeout")
        return self

    def topics(self) -> dict[str, str]:
        """Topic name -> topic kind (``agentstate`` or ``callthread``), prefix applied."""
        out: dict[str, str] = {}
        if self.agent_state_topic:
            out[self.topic_prefix + self.agent_state_topic] = AGENT_STATE
        if self.call_thread_topic:
            out[self.topic_prefix + self.call_thread_topic] = CALL_THREAD
        return out

    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def resolve(self, path: str | None, base: Path) -> str | None:
        """A file option made absolute against the config file's directory."""
        if path is None:
            return None
        candidate = Path(path).expanduser()
        return str(candidate if candidate.is_absolute() else base / candidate)
