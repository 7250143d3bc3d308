"""The RTE token: ``GET /token/{userid}/rte/`` on the REST API returns the hub URL and a JWT.

The hub checks the JWT only when a connection is made, so the source asks
for a fresh one before *every* connection (signalrcore's own reconnect would
reuse the old one, and fail with 401 once it expires).  The answer's field
names are read in any case: the document shows ``WssEndpoint`` in the JSON
and ``WSSEndpoint`` in its JavaScript.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from .errors import Transient, Unauthorized

__all__ = ["RteToken", "fetch_token"]


@dataclass(frozen=True, slots=True)
class RteToken:
    endpoint: str
    token: str


def _get(doc: dict[str, Any], name: str) -> Any:
    lowered = {k.lower(): v for k, v in doc.items() if isinstance(k, str)}
    return lowered.get(name.lower())


async def fetch_token(
    http: httpx.AsyncClient, api_url: str, user_id: str, username: str, secret: str
) -> RteToken:
    """Ask the REST API for an RTE token; :class:`Unauthorized` on 401/403."""
    url = f"{api_url}/token/{user_id}/rte/"
    try:
        response = await http.get(url, auth=(username, secret))
    except httpx.HTTPError as err:
        raise Transient(f"token request to {url} failed: {type(err).__name__}: {err}") from None
    if response.status_code in (401, 403):
        raise Unauthorized(
            f"the REST API refused the credentials of {username!r} for user id {user_id!r} "
            f"({response.status_code} on GET /token/{user_id}/rte/)"
        )
    if response.status_code != 200:
        raise Transient(f"token request answered {response.status_code}: {response.text[:200]}")
    try:
        doc = response.json()
    except ValueError:
        raise Transient("token response is not JSON") from None
    if not isinstance(doc, dict):
        raise Transient("token response is not a JSON object")
    endpoint, token = _get(doc, "WssEndpoint"), _get(doc, "Token")
    if not isinstance(endpoint, str) or not isinstance(token, str) or not token:
        raise Transient("token response lacks WssEndpoint or Token")
    return RteToken(endpoint=endpoint, token=token)
