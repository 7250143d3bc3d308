"""Access tokens from the A&A service: OAuth2 client credentials, cached and refreshed.

A token is needed twice per connection: for the subscription REST call and
for the WebSocket ``authentication`` message.  It is fetched when needed and
reused until ``refresh_before`` seconds before it expires, so a reconnect
never presents a token that is about to lapse; nothing is refreshed in the
background because nothing uses a token between connections.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from .errors import BadCredentials, Transient

__all__ = ["Token", "TokenProvider"]

#: Assumed lifetime when the token response has no ``expires_in``.
DEFAULT_TOKEN_LIFETIME = 300.0


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    #: ``time.monotonic()`` when it was fetched and when it stops being used.
    fetched_at: float
    expires_at: float


class TokenProvider:
    """Hands out a valid access token, fetching a new one when the cached one is old or refused."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        refresh_before: float = 60.0,
    ) -> None:
        self.http = http
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.refresh_before = refresh_before
        self.fetches = 0
        self._token: Token | None = None
        self._lock = anyio.Lock()

    async def get(self) -> Token:
        """A token valid for at least ``refresh_before`` seconds (or half its lifetime)."""
        async with self._lock:  # one fetch at a time: concurrent callers share it
            token = self._token
            if token is None or time.monotonic() >= self._refresh_at(token):
                token = self._token = await self._fetch()
            return token

    def invalidate(self, token: Token | None = None) -> None:
        """Forget the cached token (the server refused it); the next ``get`` fetches anew."""
        if token is None or self._token == token:
            self._token = None

    def _refresh_at(self, token: Token) -> float:
        lifetime = token.expires_at - token.fetched_at
        return token.expires_at - min(self.refresh_before, lifetime / 2)

    async def _fetch(self) -> Token:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        if self.scope:
            form["scope"] = self.scope
        try:
            response = await self.http.post(
                self.token_url, data=form, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as err:
            raise Transient(f"token endpoint {self.token_url}: {_describe(err)}") from None
        if response.status_code in (400, 401, 403):
            raise BadCredentials(
                f"token endpoint {self.token_url} refused the client credentials "
                f"(HTTP {response.status_code}: {_oauth_error(response)}); "
                "check client_id, client_secret and token_url"
            )
        if response.status_code != 200:
            raise Transient(
                f"token endpoint {self.token_url}: HTTP {response.status_code} "
                f"{_oauth_error(response)}"
            )
        try:
            doc: Any = response.json()
            value = doc["access_token"]
        except (ValueError, KeyError, TypeError):
            raise Transient(
                f"token endpoint {self.token_url}: no access_token in the answer"
            ) from None
        if not isinstance(value, str) or not value:
            raise Transient(f"token endpoint {self.token_url}: empty access_token")
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        now = time.monotonic()
        self.fetches += 1
        return Token(value=value, fetched_at=now, expires_at=now + float(lifetime))


def _oauth_error(response: httpx.Response) -> str:
    """The OAuth2 ``error``/``error_description`` of a refusal, else the start of the body."""
    try:
        doc = response.json()
    except ValueError:
        return response.text[:200] or "no body"
    if isinstance(doc, dict) and "error" in doc:
        description = doc.get("error_description")
        return f"{doc['error']}: {description}" if description else str(doc["error"])
    return response.text[:200]


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
