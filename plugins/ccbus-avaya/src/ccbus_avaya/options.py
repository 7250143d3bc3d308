"""The options of an ``avaya`` source, as written under ``options:`` in the config.

Every option has a default except the account and the client credentials,
so a minimal config is four lines.  The model refuses unknown keys, so
``ccbus check`` reports a misspelt one with file, line and a suggestion
before anything connects.  Timings are :data:`ccbus.Duration` values
(``30s``, ``5m`` or seconds), which is also what lets the tests run the
whole reconnect machinery in milliseconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ccbus import Duration, Options

from .protocol import BODY_EVENTS

__all__ = ["AvayaOptions", "default_token_url"]


def default_token_url(base_url: str, account_id: str) -> str:
    """The A&A token endpoint when none is configured.

    The AsyncAPI document's security scheme names a Keycloak-style realm URL
    (``/auth/realms/<realm>/protocol/openid-connect/token``); the realm is
    taken to be the account id, as Avaya's authentication guide describes.
    """
    return f"{base_url.rstrip('/')}/auth/realms/{account_id}/protocol/openid-connect/token"


class AvayaOptions(Options):
    """Options of one ``avaya`` source instance (see the plugin README for each)."""

    #: ``https://<region>.cc.avayacloud.com``: the CCaaS FQDN of the Notification API.
    base_url: str = "https://uk.cc.avayacloud.com"
    account_id: str
    client_id: str
    client_secret: str
    #: The A&A service's OAuth2 token endpoint; derived from base_url and account_id if unset.
    token_url: str | None = None
    #: Extra ``scope`` for the client-credentials grant, if the tenant needs one.
    scope: str | None = None
    #: Which events to subscribe to: ``ALL`` or a list of body event names.
    events: list[str] = Field(default_factory=lambda: ["ALL"])
    #: ``websocket`` (the AsyncAPI channel) or ``webhook`` (Avaya posts to callback_url).
    transport: Literal["websocket", "webhook"] = "websocket"
    #: webhook: the public URL Avaya posts to (it must reach this ccbus's HTTP listener).
    callback_url: str | None = None
    #: webhook: the path served on ccbus's listener (default ``/avaya/<instance name>``).
    webhook_path: str | None = None
    #: webhook: a shared secret; added to the callback URL as ``?token=`` and required back.
    webhook_secret: str | None = None

    #: Application ``ping`` period; the server's pingInterval lowers it, never raises it.
    #: Pings keep it whether or not the last one was answered.
    ping_every: Duration = 30.0
    #: A ping without a pong (and no other traffic) for this long means a dead connection;
    #: capped at pingInterval minus the ping period, to notice it within pingInterval.
    pong_timeout: Duration = 10.0
    #: How long to wait for the ``authenticationResponse`` after connecting.
    auth_timeout: Duration = 10.0
    #: TCP + TLS + WebSocket handshake, and each REST call.
    connect_timeout: Duration = 10.0
    #: Recreate the subscription this long before it expires (at most half its lifetime).
    renew_before: Duration = 60.0
    #: Fetch a new token this long before the current one expires.
    token_refresh_before: Duration = 60.0
    #: First reconnect delay; doubles (with jitter) up to backoff_cap.
    backoff_initial: Duration = 0.5
    backoff_cap: Duration = 60.0
    #: Retry period while the server says our requests are malformed or credentials are wrong.
    misconfigured_retry: Duration = 300.0

    #: Reject (dead-letter) notifications with fields the schema does not declare.
    strict_schema: bool = True
    #: Channels that count as calls for the canonical call.* events; ``*`` for all.
    call_channels: list[str] = Field(default_factory=lambda: ["Voice"])
    #: Largest WebSocket message accepted, in bytes.
    max_message_bytes: int = Field(default=1024 * 1024, gt=0)
    #: ``system`` (environment proxies), ``none``, or a proxy URL. Loopback is always direct.
    proxy: str = "system"
    #: Verify the server's TLS certificate (turn off only for a lab).
    verify_tls: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> AvayaOptions:
        if self.transport == "webhook" and not self.callback_url:
            raise ValueError("transport 'webhook' needs 'callback_url' (the URL Avaya posts to)")
        if self.webhook_path is not None and not self.webhook_path.startswith("/"):
            raise ValueError("'webhook_path' must start with '/'")
        unknown = [e for e in self.events if e != "ALL" and e not in BODY_EVENTS]
        if unknown:
            raise ValueError(
                f"unknown event(s) {', '.join(map(repr, unknown))} in 'events' "
                f"(use ALL or some of: {', '.join(sorted(BODY_EVENTS))})"
            )
        if not self.events:
            raise ValueError("'events' is empty: use [ALL] for every event")
        if self.ping_every <= 0 or self.pong_timeout <= 0:
            raise ValueError("'ping_every' and 'pong_timeout' must be positive")
        return self

    @property
    def resolved_token_url(self) -> str:
        return self.token_url or default_token_url(self.base_url, self.account_id)
