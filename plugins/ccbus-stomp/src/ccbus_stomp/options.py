"""How to reach the broker: one options model every STOMP-based plugin nests.

A plugin puts it under one key (``broker:``) of its own options, so a config
reads the same for CVP and the CUCM Connector, and ``ccbus check`` reports a
misspelt key inside it with file, line and a suggestion::

    sources:
      cvp-prod:
        plugin: cisco-cvp
        options:
          broker:
            url: stomp+ssl://amq.example.net:61614
            username: ccbus
            password: ${credential:amq-password}
            ca_file: /etc/ccbus/amq-ca.pem
            client_id: ccbus-cvp-prod
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from ccbus import Duration, Options

__all__ = ["SCHEMES", "StompOptions"]

#: URL schemes: plain STOMP, and STOMP over TLS (ActiveMQ's ``stomp+ssl`` connector).
SCHEMES = {"stomp": False, "stomp+ssl": True, "stomp+tls": True, "ssl": True}
DEFAULT_PORTS = {False: 61613, True: 61614}


class StompOptions(Options):
    """One broker connection (see the ccbus-stomp README for each key)."""

    #: ``stomp://host:61613`` or ``stomp+ssl://host:61614``.
    url: str = "stomp://127.0.0.1:61613"
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    #: The STOMP ``host`` header (virtual host); ActiveMQ ignores it.
    vhost: str | None = None
    #: The JMS client id. Needed for durable subscriptions; two live connections
    #: with one client id clash, so make it unique per ccbus instance and source.
    client_id: str | None = None

    #: TLS: a PEM file of CA certificates to verify the broker with (system CAs if unset).
    ca_file: Path | None = None
    #: TLS client certificate and key (PEM), when the broker asks for one.
    cert_file: Path | None = None
    key_file: Path | None = None
    #: Verify the broker's certificate and host name (turn off only in a lab).
    verify_tls: bool = True

    #: Heartbeats we send / expect, as negotiated in CONNECT (0 turns one off).
    heartbeat_send: Duration = 10.0
    heartbeat_receive: Duration = 10.0
    #: TCP + TLS + STOMP CONNECT handshake.
    connect_timeout: Duration = 10.0
    #: Unacknowledged messages the broker may push per subscription
    #: (``activemq.prefetchSize``): it bounds memory and the work redelivered
    #: after a crash.
    prefetch: int = Field(default=1000, gt=0)
    #: First reconnect delay; grows with jitter to backoff_cap, forever.
    backoff_initial: Duration = 0.5
    backoff_cap: Duration = 30.0

    @model_validator(mode="after")
    def _check(self) -> StompOptions:
        parts = urlsplit(self.url)
        if parts.scheme not in SCHEMES:
            raise ValueError(
                f"url {self.url!r}: scheme must be one of {', '.join(sorted(SCHEMES))}"
            )
        if not parts.hostname:
            raise ValueError(f"url {self.url!r} has no host")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as err:
            raise ValueError(f"url {self.url!r}: {err}") from None
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.heartbeat_send < 0 or self.heartbeat_receive < 0:
            raise ValueError("heartbeats must be 0 (off) or positive")
        return self

    @property
    def tls(self) -> bool:
        return SCHEMES[urlsplit(self.url).scheme]

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or DEFAULT_PORTS[self.tls]

    @property
    def safe_url(self) -> str:
        """The URL for logs: never a password."""
        return f"{urlsplit(self.url).scheme}://{self.host}:{self.port}"
