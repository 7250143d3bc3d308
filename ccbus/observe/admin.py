"""The console's actions: dead letters listed, retried and purged over the listener.

::

    GET  /dead-letters           the newest dead letters, with their ids and times
    POST /dead-letters/retry     {"ids": [3, 4]}: back in the outbox with fresh attempts
    POST /dead-letters/purge     {"ids": [3, 4]}: deleted

The listener was read-only; these two routes change state, so they are
guarded as a browser console must be (OWASP's CSRF advice, as Django and
Grafana apply it):

* no state changes on GET: only POST changes anything;
* same origin: a request whose ``Sec-Fetch-Site`` is another site, or whose
  ``Origin`` is not this listener, is refused (a page elsewhere cannot make
  the admin's browser retry or purge);
* a JSON body (``Content-Type: application/json``): a cross-site form cannot
  send one without a CORS preflight, which the listener never grants;
* a token, when ``http.admin_token`` is set, in the ``X-Ccbus-Token`` header
  (or ``Authorization: Bearer``), never a cookie, so the browser never adds
  it by itself.  Without a token the actions work on a loopback listener
  only: a listener bound beyond loopback refuses them until a token is set
  (and ``ccbus check`` warns about it).

Reads stay open, like the rest of the listener: what it serves is redacted.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from ccbus.observe.view import DeadLetterDesk

__all__ = ["TOKEN_HEADER", "AdminPolicy", "admin_routes", "exposure_warning", "is_loopback"]

log = logging.getLogger("ccbus.observe.admin")

#: The header the console (and ``curl``) sends the admin token in.
TOKEN_HEADER = "X-Ccbus-Token"
#: Dead letters ``GET /dead-letters`` lists at most (the newest).
LIST_LIMIT = 200
#: Ids one POST may name: a console click names one, a script a page of them.
MAX_IDS = 10_000


def is_loopback(host: str) -> bool:
    """True for a listen host only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_warning(host: str, token: str | None) -> str | None:
    """What ``ccbus check`` says about a listener bound beyond loopback without a token."""
    if is_loopback(host) or token:
        return None
    return (f"http.listen binds {host}, beyond loopback, and http.admin_token is not set: "
            "the live console's retry and purge buttons are refused there; set "
            'http.admin_token: "${credential:ccbus-admin}" to use them, and put the '
            "listener behind a proxy that authenticates before exposing it")


@dataclass(frozen=True, slots=True)
class AdminPolicy:
    """Who may change state through the listener: see the module's docstring."""

    #: ``http.admin_token``: when set, every POST must carry it.
    token: str | None = None
    #: Whether the listener is bound to loopback only.
    loopback: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.token) or self.loopback

    def describe(self) -> dict[str, bool]:
        """What the page needs to know: whether actions work, and whether to ask for a token."""
        return {"enabled": self.enabled, "token_required": bool(self.token)}

    def refusal(self, request: Request) -> str | None:
        """Why this POST may not change state, or None when it may."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"refused: a {site} request (the console only acts for its own page)"
        origin = request.headers.get("origin")
        if origin is not None:
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin != own:
                return f"refused: Origin {origin} is not this listener ({own})"
        if not self.token:
            if not self.loopback:
                return ("refused: the listener is not bound to loopback and http.admin_token "
                        "is not set")
        else:
            given = request.headers.get(TOKEN_HEADER.lower(), "")
            auth = request.headers.get("authorization", "")
            if not given and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return f"refused: missing or wrong admin token (header {TOKEN_HEADER})"
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return "refused: send the request as application/json"
        return None


async def _ids(request: Request) -> list[int] | str:
    """The ``ids`` of a JSON body, or why they cannot be read."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        return "the body is not JSON"
    ids = body.get("ids") if isinstance(body, dict) else None
    if (not isinstance(ids, list) or not ids or len(ids) > MAX_IDS
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        return f'give {{"ids": [dead letter ids]}} (1 to {MAX_IDS} integers)'
    return ids


def admin_routes(
    desk: DeadLetterDesk,
    policy: AdminPolicy,
    redact: Callable[[Any], Any],
) -> list[Route]:
    """The dead-letter routes over ``desk``, guarded by ``policy``."""

    async def listing(request: Request) -> JSONResponse:
        total, letters = await desk.dead_letter_list(LIST_LIMIT)
        return JSONResponse(redact({"total": total, "limit": LIST_LIMIT,
                                    "dead_letters": letters, "admin": policy.describe()}))

    def guarded(name: str, act: Callable[[list[int]], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> JSONResponse:
            why = policy.refusal(request)
            if why is not None:
                log.warning("console %s from %s %s", name,
                            request.client.host if request.client else "?", why)
                return JSONResponse({"error": why}, status_code=403)
            ids = await _ids(request)
            if isinstance(ids, str):
                return JSONResponse({"error": ids}, status_code=400)
            try:
                answer = await act(ids)
            except ValueError as err:  # the store cannot do it (delivery.outbox: false)
                return JSONResponse({"error": str(err)}, status_code=409)
            log.info("console %s of dead letter(s) %s from %s: %s", name,
                     ", ".join(map(str, ids)), request.client.host if request.client else "?",
                     answer)
            return JSONResponse(answer)

        return endpoint

    async def retry(ids: list[int]) -> dict[str, Any]:
        moved = await desk.retry_dead_letters(ids)
        return {"retried": moved, "not_retried": sorted(set(ids) - set(moved))}

    async def purge(ids: list[int]) -> dict[str, Any]:
        return {"purged": await desk.purge_dead_letters(ids)}

    return [
        Route("/dead-letters", listing, methods=["GET"]),
        Route("/dead-letters/retry", guarded("retry", retry), methods=["POST"]),
        Route("/dead-letters/purge", guarded("purge", purge), methods=["POST"]),
    ]
