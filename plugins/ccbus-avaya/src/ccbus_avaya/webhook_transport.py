"""The ``avaya`` source with ``transport: webhook``: Avaya posts notifications to ccbus.

The Notification API offers webhooks as its other transport.  The source
creates the subscription with ``transport: {type: WEBHOOK, endpoint:
<callback_url>}`` and serves the notifications on ccbus's own HTTP listener
(a route added with ``ctx.add_route``, like the built-in ``webhook`` source),
so they take exactly the path WebSocket notifications take: same validation,
same mapping, same dead letters.

``callback_url`` is the public URL Avaya reaches (a reverse proxy in front
of the loopback listener, typically); ``webhook_path`` is the path served
locally (default ``/avaya/<instance>``).  The document says nothing about
how webhook posts are authenticated, so a ``webhook_secret`` is added to
the callback URL as ``?token=...`` and every post must carry it back (as
that query parameter or an ``Authorization: Bearer`` header).

Answers: 202 with counts when the body was read (schema-breaking
notifications are dead-lettered, not refused, so Avaya does not resend them
forever), 400 for a body that is not JSON, 401 for a wrong or missing
secret, 413 for a body over 1 MiB.
"""

from __future__ import annotations

import hmac
import json
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse

from ccbus import SourceContext

from .errors import Misconfigured
from .intake import INVALID
from .protocol import Problem, ServerMessage, classify_server_message
from .source import RETRYABLE, AvayaSourceBase

__all__ = ["WebhookSource", "with_token"]

MAX_BODY = 1024 * 1024


def with_token(url: str, secret: str) -> str:
    """``url`` with ``token=<secret>`` added to its query string."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", secret))
    return urlunsplit(parts._replace(query=urlencode(query)))


class WebhookSource(AvayaSourceBase):
    """Keeps a WEBHOOK subscription alive and receives its posts on the local listener."""

    transport = "WEBHOOK"

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.path = self.options.webhook_path or f"/avaya/{ctx.name}"
        self.accepted = 0
        self.refused = 0
        # routes are collected when the bus builds its HTTP app: add ours now, not in run()
        ctx.add_route(self.path, self.receive, ["POST"])

    @property
    def callback_url(self) -> str:
        assert self.options.callback_url is not None  # the options validator insists
        if self.options.webhook_secret:
            return with_token(self.options.callback_url, self.options.webhook_secret)
        return self.options.callback_url

    async def run(self) -> None:
        if not self.options.webhook_secret:
            self.log.warning(
                "avaya %s: no webhook_secret: anyone who can reach %s can post notifications",
                self.ctx.name,
                self.path,
            )
        async with self._http_client() as http:
            self._rest(http)
            while True:
                try:
                    subscription = await self._create_subscription(self.callback_url)
                    self.backoff.started()
                    self._said_misconfigured = None
                    self.ctx.set_state("subscribed")
                    # no renewal call in the document: a new subscription before this one ends
                    renew_at = subscription.renew_at(self.options.renew_before)
                    await anyio.sleep(max(0.0, renew_at - time.monotonic()))
                except Misconfigured as err:
                    await self._misconfigured(err)
                except RETRYABLE as err:
                    await self._back_off(err, "subscribing again")

    async def receive(self, request: Request) -> JSONResponse:
        """One POST from the Notification API: a notification, or a JSON array of them."""
        if not self._authorized(request):
            self.refused += 1
            self.log.warning(
                "avaya %s: refused a post from %s: missing or wrong token",
                self.ctx.name,
                request.client.host if request.client else "?",
            )
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        body = await request.body()
        if len(body) > MAX_BODY:
            self.refused += 1
            return JSONResponse({"error": f"body larger than {MAX_BODY} bytes"}, status_code=413)
        doc = await self.intake.decode(body)
        if doc is INVALID:
            self.refused += 1
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        items = doc if isinstance(doc, list) else [doc]
        accepted = rejected = 0
        for item in items:
            raw = body if len(items) == 1 and item is doc else json.dumps(item).encode()
            kind = classify_server_message(item)
            if kind is ServerMessage.NOTIFICATION and await self.intake.notification(item, raw):
                accepted += 1
                continue
            if kind is not ServerMessage.NOTIFICATION:
                await self.intake.reject(
                    [Problem("unknown_message", "a webhook post carries notifications only")], raw
                )
            rejected += 1
        self.accepted += accepted
        return JSONResponse({"accepted": accepted, "rejected": rejected}, status_code=202)

    def _authorized(self, request: Request) -> bool:
        secret = self.options.webhook_secret
        if not secret:
            return True
        given = request.query_params.get("token", "")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = given or header[7:]
        return hmac.compare_digest(given.encode(), secret.encode())
