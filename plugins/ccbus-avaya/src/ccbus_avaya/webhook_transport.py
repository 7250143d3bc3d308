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

Answers: 202 with counts when the body was read (each notification is
mapped inside ``ctx.convert``: one that breaks the schema, or that the
mapping fails on, is dead-lettered, not refused, so Avaya does not resend
it forever), 400 for a body that is not JSON (dead-lettered as
``invalid_json``), 401 for a wrong or missing secret (``unauthorized``), 413
for a body over 1 MiB (``too_large``).  Every refusal is counted on
``/metrics`` (``ccbus_source_bad_input_total``) by that reason.
"""

from __future__ import annotations

import hmac
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse

from ccbus import SourceContext

from .errors import Misconfigured
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
        peer = request.client.host if request.client else "?"
        if not self._authorized(request):
            # the unauthenticated body is not read, let alone kept
            await self.ctx.refuse("unauthorized", "missing or wrong token", None, peer=peer)
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        body = await request.body()
        if len(body) > MAX_BODY:
            detail = f"body larger than {MAX_BODY} bytes"
            await self.ctx.refuse("too_large", f"{detail} ({len(body)})", None, peer=peer)
            return JSONResponse({"error": detail}, status_code=413)
        intake = self.intake
        doc = await self.ctx.convert(body, lambda: _Doc(intake.decode(body)), peer=peer)
        if doc is None:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        many = isinstance(doc.value, list)
        items: list[Any] = doc.value if many else [doc.value]
        accepted = rejected = 0
        for index, item in enumerate(items):
            # a single notification is mapped with the body as sent (its digest is the id
            # when it carries none); an item of an array is dead-lettered with the whole post
            raw = None if many else body
            events = await self.ctx.convert(
                body,
                lambda: intake.convert_posted(item, raw),  # noqa: B023 - awaited at once
                peer=peer,
                **({"item": index} if many else {}),
            )
            if events is None:
                rejected += 1
                continue
            await intake.emit(events)  # outside convert: a failure to record is the bus's
            accepted += 1
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


class _Doc:
    """A decoded body, boxed: ``ctx.convert`` returns None for a refusal, and JSON has null."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value
