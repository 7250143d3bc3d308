"""Built-in source ``webhook``: events POSTed as JSON to the local HTTP listener.

::

    sources:
      crm:
        plugin: webhook
        options:
          path: /events/crm                 # default: /events/<instance name>
          hmac_secret: ${CRM_WEBHOOK_SECRET}  # or token: ..., or both

The body is one event object or a JSON array of them (CloudEvents-like:
only ``type`` is required).  Authentication:

* ``token``: the request carries ``Authorization: Bearer <token>``.  Checked
  on the headers, before a byte of the body is read.
* ``hmac_secret``: the request carries ``X-Ccbus-Timestamp`` (Unix seconds)
  and ``X-Ccbus-Signature: sha256=<hex>``, the HMAC-SHA256 of
  ``"<timestamp>.<body>"``.  The timestamp is checked on the headers: one
  that is not a finite number (``nan``, ``inf``), or more than ``max_skew``
  away from now, is refused before the body is read, so a captured request
  cannot be replayed later.  The signature needs the body, so at most
  ``max_unverified_reads`` bodies not yet proven by a signature are read at
  once (503 with ``Retry-After`` past that): a flood of unsigned requests
  costs at most that many times ``max_body`` bytes of memory.
* Replays within the window: a signature already accepted (202) is refused
  with 409 until its timestamp leaves the ``max_skew`` window, so the same
  signed request is accepted once.  The signatures are kept in memory
  (at most ``max_replay_cache``; past that the oldest are forgotten early), so
  a restart forgets them: the bus's duplicate check by event ``id``
  (``dedup_window``) still drops events sent again with the same id.  A
  bearer token proves only who sent a request, not which one: with ``token``
  alone, give events an ``id`` to make a repeated request harmless.

A source with neither refuses to start unless ``allow_unauthenticated: true``
(for loopback experiments).  Answers: 202 with the number of events
accepted (after their actions are recorded), 400 naming what is wrong with
the body (not JSON, not UTF-8, nested too deeply, not an event), 401 for bad
credentials, 409 for a replayed signed request, 413 for a body over
``max_body`` bytes (refused from ``Content-Length`` before reading, or as
soon as a chunked body passes the limit), 408 for a body that takes longer
than ``read_timeout`` to arrive, 503 when too many unsigned bodies are being
read already, and 503 with ``Retry-After`` while the bus cannot record events
(its state directory is full: see :mod:`ccbus.delivery.outage`), so the
sender keeps the events and sends them again later.  Each refusal is counted by reason
(``ccbus_source_bad_input_total``) and logged, at most once a minute per
reason, so a flood of bad requests cannot flood the journal.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections import OrderedDict
from typing import Any

import anyio
from pydantic import Field, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

from ccbus.config.schema import Duration, Options
from ccbus.events.envelope import Event
from ccbus.events.jsondecode import TooDeep, decode_json
from ccbus.hookspecs import hookimpl
from ccbus.observe.logs import LogEvery
from ccbus.sources.api import SourceContext, SourceSpec

MAX_BODY = 1024 * 1024
#: A refusal reason is logged at most once per this many seconds (always counted).
LOG_INTERVAL = 60.0
#: Seconds a sender is asked to wait (``Retry-After``) while the bus takes no input.
PAUSED_RETRY_AFTER = 30
SIGNATURE_HEADER = "x-ccbus-signature"
TIMESTAMP_HEADER = "x-ccbus-timestamp"
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")


class WebhookOptions(Options):
    path: str | None = None
    token: str | None = None
    hmac_secret: str | None = None
    max_skew: Duration = 300.0
    allow_unauthenticated: bool = False
    max_body: int = Field(default=MAX_BODY, gt=0)
    read_timeout: Duration = 10.0
    #: Bodies read at once before their HMAC signature is checked (see the module docstring).
    max_unverified_reads: int = Field(default=16, gt=0)
    #: Accepted signatures remembered to refuse replays within ``max_skew``.
    max_replay_cache: int = Field(default=100_000, gt=0)

    @model_validator(mode="after")
    def _needs_auth(self) -> WebhookOptions:
        if not (self.token or self.hmac_secret or self.allow_unauthenticated):
            raise ValueError("set 'token' or 'hmac_secret' (or 'allow_unauthenticated: true')")
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError("'path' must start with '/'")
        return self


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Ccbus-Signature`` value for a body: what senders compute."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookSource:
    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.options: WebhookOptions = ctx.options
        self.path = self.options.path or f"/events/{ctx.name}"
        self.accepted = 0
        self.rejected = 0
        self._log_every = LogEvery(LOG_INTERVAL)  # per refusal reason
        self._unverified = anyio.Semaphore(self.options.max_unverified_reads)
        #: signatures accepted, and until when their timestamp is within the window
        self._signatures: OrderedDict[str, float] = OrderedDict()
        ctx.add_route(self.path, self.receive, ["POST"])

    async def run(self) -> None:
        self.ctx.set_state("listening")
        self.ctx.log.info("webhook %s: listening on %s", self.ctx.name, self.path)
        await anyio.sleep_forever()

    def _token_problem(self, request: Request) -> str | None:
        """None when the bearer token (if one is configured) is right, else why not."""
        if self.options.token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.options.token}".encode()):
                return "missing or wrong bearer token"
        return None

    def _stamp_problem(self, request: Request) -> str | None:
        """What the HMAC headers say wrong before the body is needed: the timestamp
        (a finite number within ``max_skew``) and the signature's shape."""
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        try:
            when = float(stamp)
        except ValueError:
            return f"missing or malformed {TIMESTAMP_HEADER}"
        if not math.isfinite(when):  # NaN compares false with everything: no window at all
            return f"{TIMESTAMP_HEADER} is not a finite number"
        skew = abs(time.time() - when)
        if skew > self.options.max_skew:
            return f"timestamp {skew:.0f}s away from now (replayed request?)"
        if not _SIGNATURE.fullmatch(request.headers.get(SIGNATURE_HEADER, "")):
            return f"missing or malformed {SIGNATURE_HEADER} (want sha256=<64 hex digits>)"
        return None

    def _signature_problem(self, request: Request, body: bytes) -> str | None:
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        assert self.options.hmac_secret
        expected = sign(self.options.hmac_secret, stamp, body)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return "signature does not match the body"
        return None

    def _seen_before(self, request: Request) -> bool:
        """Remember a signed request's signature until its timestamp leaves the window;
        True if it was already remembered (a replay)."""
        now = time.time()
        seen = self._signatures
        while seen:  # forget what left the window (roughly in order of arrival)
            oldest, expires = next(iter(seen.items()))
            if expires > now and len(seen) < self.options.max_replay_cache:
                break
            del seen[oldest]
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if signature in seen:
            return True
        expires = float(request.headers.get(TIMESTAMP_HEADER, "0")) + self.options.max_skew
        seen[signature] = expires
        return False

    async def _body(self, request: Request) -> bytes | JSONResponse:
        """The body, read within the size and time limits, or the refusal to send."""
        limit = self.options.max_body
        too_large = f"body larger than {limit} bytes"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return self._reject(request, 413, "too_large", too_large, close=True)
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.options.read_timeout) as reading:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return self._reject(request, 413, "too_large", too_large, close=True)
                chunks.append(chunk)
        if reading.cancelled_caught:
            return self._reject(request, 408, "slow_body",
                                f"body not received within {self.options.read_timeout:g}s",
                                close=True)
        return b"".join(chunks)

    async def receive(self, request: Request) -> JSONResponse:
        paused = self.ctx.paused()
        if paused is not None:  # not read, not acknowledged: the sender keeps it
            return self._reject(request, 503, "not_accepting", paused, close=True,
                                headers={"Retry-After": str(PAUSED_RETRY_AFTER)}, quiet=True)
        problem = self._token_problem(request)
        if problem is None and self.options.hmac_secret:
            problem = self._stamp_problem(request)
        if problem is not None:  # refused on the headers: the body is never read
            return self._reject(request, 401, "unauthorized", problem, public="unauthorized",
                                close=True)
        if self.options.hmac_secret and not self.options.token:
            # nothing proves the sender yet: bound how many such bodies are in memory
            if self._unverified.value == 0:
                return self._reject(request, 503, "busy",
                                    f"more than {self.options.max_unverified_reads} unsigned "
                                    "bodies being read at once", close=True,
                                    headers={"Retry-After": "1"})
            async with self._unverified:
                body = await self._body(request)
        else:
            body = await self._body(request)
        if isinstance(body, JSONResponse):
            return body
        if self.options.hmac_secret:
            problem = self._signature_problem(request, body)
            if problem is not None:
                return self._reject(request, 401, "unauthorized", problem, public="unauthorized")
            if self._seen_before(request):
                return self._reject(request, 409, "replayed",
                                    "this signed request was accepted before (replayed?)")
        answer: JSONResponse | None = None
        try:
            answer = await self._accept(request, body)
            return answer
        finally:
            if answer is None or answer.status_code != 202:
                # not accepted after all (a refusal, or the bus stopping): a sender may
                # send it again without being taken for a replay
                self._signatures.pop(request.headers.get(SIGNATURE_HEADER, ""), None)

    async def _accept(self, request: Request, body: bytes) -> JSONResponse:
        try:
            doc: Any = decode_json(body)
        except TooDeep as err:
            return self._reject(request, 400, "too_deep", f"invalid JSON: {err}")
        except ValueError as err:  # UnicodeDecodeError, nesting and RFC 8259 included
            return self._reject(request, 400, "invalid_json", f"invalid JSON: {err}")
        docs = doc if isinstance(doc, list) else [doc]
        events = []
        for index, item in enumerate(docs):
            try:
                events.append(Event.from_dict(item, default_source=self.ctx.name))
            except Exception as err:  # noqa: BLE001 - one request must never stop the source
                where = f"item {index}: " if isinstance(doc, list) else ""
                return self._reject(request, 400, "invalid_event", f"{where}{err}"[:500])
        for event in events:
            event.source = self.ctx.name  # the configured instance, whatever the sender claims
            await self.ctx.emit(event)
        self.accepted += len(events)
        return JSONResponse({"accepted": len(events)}, status_code=202)

    def _reject(
        self, request: Request, status: int, reason: str, detail: str, *, close: bool = False,
        public: str | None = None, headers: dict[str, str] | None = None, quiet: bool = False,
    ) -> JSONResponse:
        """Count, log (at most once a minute per reason) and answer a refusal.

        ``close``: the body was not read to its end, so the connection cannot carry
        another request; ``Connection: close`` tells the client not to reuse it.
        ``public``: what the client is told, when ``detail`` is for the log only.
        ``quiet``: counted, not logged (the bus already logs why it takes no input).
        """
        self.rejected += 1
        self.ctx.count_bad_input(reason)
        if not quiet and self._log_every.due(reason) is not None:
            self.ctx.log.warning(
                "webhook %s: refused a request from %s with %d: %s "
                "(counted as %s; logged at most once a minute)",
                self.ctx.name,
                request.client.host if request.client else "?",
                status,
                detail,
                reason,
            )
        headers = {**(headers or {}), **({"Connection": "close"} if close else {})}
        return JSONResponse({"error": public or detail}, status_code=status, headers=headers)


@hookimpl
def register_sources() -> list[SourceSpec]:
    return [
        SourceSpec(
            name="webhook",
            options=WebhookOptions,
            factory=WebhookSource,
            description="Receive events as JSON over HTTP (token or HMAC).",
        )
    ]
