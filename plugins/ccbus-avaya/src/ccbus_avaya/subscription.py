"""The Notification API's subscription REST call, and what its answer tells the source.

``POST /api/notification/v1/accounts/{accountId}/subscriptions`` with the
family ``AGENT_ENGAGEMENT``, the events and a transport returns a
subscription: its id, the WebSocket ``endpoint`` to connect to, the
``pingInterval`` the server expects pings within, and when it expires
(``expiresAt``, ``expiresIn``).  The document describes no renewal call, so
a subscription is renewed by creating a new one before the old one expires
(see :mod:`ccbus_avaya.source`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

import httpx

from ccbus import parse_timestamp

from .auth import TokenProvider
from .errors import Misconfigured, Transient
from .protocol import FAMILY

__all__ = ["Subscription", "SubscriptionClient"]

#: Assumed lifetime when the answer says neither expiresIn nor a usable expiresAt.
DEFAULT_LIFETIME = 900.0


@dataclass(slots=True)
class Subscription:
    """One subscription, with its deadlines on the monotonic clock."""

    id: str
    transport: str
    endpoint: str
    #: seconds: the longest the server waits for a ping (None when not given)
    ping_interval: float | None
    created_at: float
    expires_at: float
    expires_at_text: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def lifetime(self) -> float:
        # rounded: both ends are monotonic-clock floats, and after an hour of uptime
        # (now + 900) - now is 900.0000000000005, not the 900 the hub said
        return round(self.expires_at - self.created_at, 6)

    def renew_at(self, renew_before: float) -> float:
        """When to replace it: ``renew_before`` ahead of expiry, at most half its lifetime."""
        return self.expires_at - min(renew_before, self.lifetime / 2)

    def expires_within(self, seconds: float) -> bool:
        return time.monotonic() + seconds >= self.expires_at

    def shorten(self, expires_in: float) -> None:
        """Take the server's later word on expiry (``expiresInterval``), if it is sooner."""
        self.expires_at = min(self.expires_at, time.monotonic() + expires_in)


class SubscriptionClient:
    """Creates subscriptions for one account."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        account_id: str,
        tokens: TokenProvider,
        events: list[str],
    ) -> None:
        self.http = http
        self.url = (
            f"{base_url.rstrip('/')}/api/notification/v1/accounts/{account_id}/subscriptions"
        )
        self.tokens = tokens
        self.events = events
        self.created = 0

    async def create(self, transport: str, callback_url: str | None = None) -> Subscription:
        """A new subscription for ``transport`` (``WEBSOCKET`` or ``WEBHOOK``).

        A 401 with a cached token is retried once with a fresh token; other
        4xx answers mean the request itself is wrong (:class:`Misconfigured`),
        5xx and network errors are :class:`Transient`.
        """
        body: dict[str, Any] = {
            "family": FAMILY,
            "events": list(self.events),
            "transport": {"type": transport},
        }
        if callback_url is not None:
            body["transport"]["endpoint"] = callback_url
        for attempt in (1, 2):
            token = await self.tokens.get()
            try:
                response = await self.http.post(
                    self.url,
                    json=body,
                    headers={
                        "Authorization": f"Bearer {token.value}",
                        "Accept": "application/json",
                    },
                )
            except httpx.HTTPError as err:
                raise Transient(
                    f"creating a subscription at {self.url}: {_describe(err)}"
                ) from None
            if response.status_code == 401:
                self.tokens.invalidate(token)
                if attempt == 1:
                    continue
                raise Transient(
                    "creating a subscription: HTTP 401 even with a new token "
                    f"({_message(response)})"
                )
            break
        if response.status_code in (400, 403, 404, 405, 409, 422):
            raise Misconfigured(
                f"the Notification API refused the subscription (HTTP {response.status_code}: "
                f"{_message(response)}); check base_url, account_id and events"
            )
        if response.status_code not in (200, 201):
            raise Transient(
                f"creating a subscription: HTTP {response.status_code} {_message(response)}"
            )
        try:
            doc = response.json()
        except ValueError:
            raise Transient("creating a subscription: the answer is not JSON") from None
        subscription = parse_subscription(doc, transport)
        self.created += 1
        return subscription


def parse_subscription(doc: Any, transport: str) -> Subscription:
    """A :class:`Subscription` from the REST answer; :class:`Transient` if it is unusable."""
    if not isinstance(doc, dict) or not isinstance(doc.get("subscriptionId"), str):
        raise Transient("creating a subscription: no subscriptionId in the answer")
    given = doc.get("transport")
    details: dict[str, Any] = given if isinstance(given, dict) else {}
    endpoint = details.get("endpoint")
    if transport == "WEBSOCKET" and not (isinstance(endpoint, str) and endpoint):
        raise Transient("creating a subscription: no transport.endpoint in the answer")
    ping = details.get("pingInterval")
    ping_interval = float(ping) if _positive_number(ping) else None
    now = time.monotonic()
    lifetime = _lifetime(doc)
    return Subscription(
        id=doc["subscriptionId"],
        transport=transport,
        endpoint=str(endpoint or ""),
        ping_interval=ping_interval,
        created_at=now,
        expires_at=now + lifetime,
        expires_at_text=str(doc.get("expiresAt", "")),
        raw=doc,
    )


def _lifetime(doc: dict[str, Any]) -> float:
    """Seconds until expiry: ``expiresIn`` (immune to clock skew), else ``expiresAt`` - now."""
    expires_in = doc.get("expiresIn")
    if _positive_number(expires_in):
        return float(expires_in)
    expires_at = parse_timestamp(doc.get("expiresAt"))
    if expires_at is not None:
        return max(0.0, (expires_at - datetime.now(UTC)).total_seconds())
    return DEFAULT_LIFETIME


def _positive_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _message(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:200] or "no body"
    if isinstance(doc, dict):
        for key in ("message", "detail", "error_description", "error", "title"):
            if key in doc:
                return str(doc[key])[:300]
    return response.text[:200]


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
