"""The ``avaya`` source over WebSocket: subscribe, connect, authenticate, keep alive, renew.

One connected period, as the AsyncAPI document describes it::

    POST .../subscriptions  ->  subscriptionId, endpoint, pingInterval, expiresAt
    connect(endpoint)
    -> {"event": "authentication", "subscriptionId": ..., "token": ...}
    <- {"event": "authenticationResponse", "status": "CONNECTION_CONFIRMED", ...}
    <- notifications ...           -> {"event": "ping"} every ping period
                                   <- {"event": "pong"}

and what the source does when a step fails (the exception classes of
:mod:`ccbus_avaya.errors` carry the decision):

=====================================  ==========================================
``CONNECTION_FAILED_INVALID_TOKEN``    forget the token, fetch a new one, retry now
``CONNECTION_FAILED_UNKNOWN_SUBSCRIPTION``  forget the subscription, create one, retry now
``CONNECTION_FAILED_INTERNAL_SERVER_ERROR`` retry after a jittered backoff delay
``CONNECTION_FAILED_CONSTRAINT_VIOLATION``  log once with the server's words, state
                                       ``misconfigured``, retry every ``misconfigured_retry``
connection closed or dropped           retry after backoff (same subscription if still valid)
a message it cannot use                decoded and mapped inside ``ctx.convert``: whatever it
                                       raises makes it a dead letter (``invalid_json``,
                                       ``unknown_field``..., ``unreadable``), counted on
                                       ``/metrics``; the connection carries on
a message over ``max_message_bytes``   websockets closes with 1009 before we see it: count it
                                       (``message_too_big``), dead-letter its size, retry after
                                       backoff
ping without pong (and no traffic)     the connection is dead: close it, retry after backoff
                                       (pings keep their period meanwhile; the wait is capped
                                       so a dead link is noticed within the server's
                                       pingInterval)
subscription close to expiry           make-before-break: create a new subscription, connect
                                       and authenticate, then close the old connection
=====================================  ==========================================

"Retry now" is used only when a *cached* token or subscription was refused,
and at most once per ten seconds, so a server that refuses everything makes
the source back off instead of spin.  Backoff is :class:`ccbus.sources.backoff.Backoff`,
the bus's own policy; and should ``run()`` ever raise, the bus restarts it
with the same policy.
"""

from __future__ import annotations

import json
import math
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, Literal, TypeGuard
from urllib.parse import urlsplit

import anyio
import httpx
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
    PayloadTooBig,
    WebSocketException,
)
from websockets.frames import CloseCode

from ccbus import Backoff, SourceContext

from .auth import Token, TokenProvider
from .errors import Misconfigured, RetryNow, Transient
from .intake import Converted, Intake
from .options import AvayaOptions
from .protocol import (
    AuthStatus,
    Problem,
    ServerMessage,
    authentication_message,
    ping_message,
)
from .subscription import Subscription, SubscriptionClient

__all__ = ["AvayaSourceBase", "WebSocketSource"]

#: Two "retry now" decisions closer than this: the second one backs off instead.
RETRY_NOW_SPACING = 10.0
#: How long closing a connection may take before it is abandoned.
CLOSE_TIMEOUT = 2.0
#: Ping at this fraction of the server's pingInterval when that is shorter than ping_every.
PING_INTERVAL_MARGIN = 0.8
USER_AGENT = "ccbus-avaya"

#: Errors of one attempt that mean "try again later".
RETRYABLE = (Transient, OSError, WebSocketException, httpx.HTTPError, TimeoutError)


class AvayaSourceBase:
    """What both transports share: options, HTTP client, tokens, subscriptions, intake."""

    transport: str = "WEBSOCKET"

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.options: AvayaOptions = ctx.options
        self.log = ctx.log
        self.intake = Intake(
            ctx, strict=self.options.strict_schema, call_channels=self.options.call_channels
        )
        self.backoff = Backoff(initial=self.options.backoff_initial, cap=self.options.backoff_cap)
        self.subscription: Subscription | None = None
        self.tokens: TokenProvider | None = None
        self.subscriptions: SubscriptionClient | None = None
        #: failures per kind of error, for tests and diagnosis
        self.failures: Counter[str] = Counter()
        self._said_misconfigured: str | None = None

    def _http_client(self) -> httpx.AsyncClient:
        proxy = self.options.proxy
        return httpx.AsyncClient(
            timeout=self.options.connect_timeout,
            verify=self.options.verify_tls,
            trust_env=proxy == "system",
            proxy=None if proxy in ("system", "none") else proxy,
            headers={"User-Agent": USER_AGENT},
        )

    def _rest(self, http: httpx.AsyncClient) -> None:
        self.tokens = TokenProvider(
            http,
            self.options.resolved_token_url,
            self.options.client_id,
            self.options.client_secret,
            scope=self.options.scope,
            refresh_before=self.options.token_refresh_before,
        )
        self.subscriptions = SubscriptionClient(
            http, self.options.base_url, self.options.account_id, self.tokens, self.options.events
        )

    async def _create_subscription(self, callback_url: str | None = None) -> Subscription:
        assert self.subscriptions is not None
        subscription = await self.subscriptions.create(self.transport, callback_url)
        self.subscription = subscription
        self.log.info(
            "avaya %s: subscription %s created (%s, expires in %.0fs%s)",
            self.ctx.name,
            subscription.id,
            self.transport,
            subscription.lifetime,
            f", pingInterval {subscription.ping_interval:g}s" if subscription.ping_interval else "",
        )
        return subscription

    async def _misconfigured(self, err: Misconfigured) -> None:
        """Say it once (until something changes), then wait ``misconfigured_retry``."""
        self.failures["misconfigured"] += 1
        message = str(err)
        if message != self._said_misconfigured:
            self.log.error(
                "avaya %s: configuration problem: %s; retrying every %gs",
                self.ctx.name,
                message,
                self.options.misconfigured_retry,
            )
            self._said_misconfigured = message
        else:
            self.log.debug("avaya %s: still misconfigured: %s", self.ctx.name, message)
        self.ctx.set_state("misconfigured")
        await anyio.sleep(self.options.misconfigured_retry)

    async def _back_off(self, err: BaseException, what: str = "reconnecting") -> None:
        self.failures[type(err).__name__] += 1
        self.ctx.set_state("reconnecting")
        delay = self.backoff.next_delay()
        self.log.warning(
            "avaya %s: %s; %s in %.1fs", self.ctx.name, _describe(err), what, delay
        )
        await anyio.sleep(delay)


@dataclass(eq=False, slots=True)
class Session:
    """One authenticated WebSocket connection and its keep-alive bookkeeping."""

    ws: ClientConnection
    subscription: Subscription
    token: Token
    #: ``time.monotonic()`` of the last message received
    last_seen: float = field(default_factory=time.monotonic)
    #: when the oldest ping not yet followed by any message was sent (None: there is none)
    unanswered_since: float | None = None
    #: replaced by a newer session (renewal): its end is expected
    retired: bool = False


class WebSocketSource(AvayaSourceBase):
    """The ``avaya`` source with ``transport: websocket`` (the default)."""

    transport = "WEBSOCKET"

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.current: Session | None = None
        self.sessions: set[Session] = set()
        #: authenticationResponse statuses received, confirmed sessions, pings and pongs
        self.auth_statuses: Counter[str] = Counter()
        self.connections = 0
        self.pings = 0
        self.pongs = 0
        self._failure: BaseException | None = None
        self._task_group: TaskGroup | None = None
        self._last_retry_now = -math.inf

    async def run(self) -> None:
        async with self._http_client() as http:
            self._rest(http)
            while True:
                try:
                    await self._connected_period(time.monotonic())
                except Misconfigured as err:
                    await self._misconfigured(err)
                except RetryNow as err:
                    self.failures["RetryNow"] += 1
                    now = time.monotonic()
                    if now - self._last_retry_now < RETRY_NOW_SPACING:
                        await self._back_off(err)
                    else:
                        self._last_retry_now = now
                        self.ctx.set_state("reconnecting")
                        self.log.info("avaya %s: %s; reconnecting now", self.ctx.name, err)
                except RETRYABLE as err:
                    await self._back_off(err)

    # -- one connected period ---------------------------------------------------------

    async def _connected_period(self, started: float) -> None:
        """Subscribe (if needed), connect, authenticate, then serve until something fails."""
        self.ctx.set_state("connecting")
        subscription = self.subscription
        if subscription is None or time.monotonic() >= subscription.renew_at(
            self.options.renew_before
        ):
            subscription = await self._create_subscription()
            self.ctx.set_state("subscribed")
        session = await self._open(subscription, started)
        self.backoff.started()
        self._said_misconfigured = None
        self.current = session
        self._failure = None
        self.ctx.set_state("connected")
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                self._spawn(session)
                tg.start_soon(self._guard, self._renewals)
        finally:
            self.current = None
            self._task_group = None
            with anyio.CancelScope(shield=True):
                for other in list(self.sessions):
                    await self._close(other, 1000, "ccbus stopping")
        raise self._failure or Transient("the connection ended")

    def _spawn(self, session: Session) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(self._guard, self._pump, session)
        self._task_group.start_soon(self._guard, self._keepalive, session)

    async def _guard(self, func: Any, *args: Any) -> None:
        """Run a task of the period; its failure ends the period (no exception groups)."""
        try:
            await func(*args)
        except Exception as err:
            if self._failure is None:
                self._failure = err
            if self._task_group is not None:
                self._task_group.cancel_scope.cancel()

    # -- connecting ---------------------------------------------------------------------

    async def _open(self, subscription: Subscription, started: float) -> Session:
        """Connect to the subscription's endpoint and authenticate; raise per status."""
        assert self.tokens is not None
        token = await self.tokens.get()
        try:
            ws = await connect(
                subscription.endpoint,
                proxy=self._proxy(subscription.endpoint),
                ssl=self._ssl(subscription.endpoint),
                open_timeout=self.options.connect_timeout,
                close_timeout=CLOSE_TIMEOUT,
                ping_interval=None,  # the document's JSON ping is the keep-alive
                max_size=self.options.max_message_bytes,
                user_agent_header=USER_AGENT,
            )
        except InvalidStatus as err:
            code = err.response.status_code
            if code in (401, 403):
                self.tokens.invalidate(token)
                raise self._stale(
                    token.fetched_at >= started, f"WebSocket upgrade refused: {err}"
                ) from None
            if code in (404, 410):
                self.subscription = None
                raise self._stale(
                    subscription.created_at >= started, f"{err} (subscription gone)"
                ) from None
            raise Transient(str(err)) from None
        session = Session(ws=ws, subscription=subscription, token=token)
        self.sessions.add(session)
        try:
            await ws.send(authentication_message(subscription.id, token.value))
            try:
                with anyio.fail_after(self.options.auth_timeout):
                    response = await self._authentication_response(session)
            except TimeoutError:
                raise Transient(
                    f"no authenticationResponse within {self.options.auth_timeout:g}s"
                ) from None
            except ConnectionClosed as err:
                await self._refused_too_big(err, ws)
                raise Transient(
                    f"connection closed during authentication ({_closed(err)})"
                ) from None
            await self._on_status(session, response, started)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._close(session, 1000, "authentication failed")
            raise
        self.connections += 1
        self.log.info(
            "avaya %s: connected to %s (subscription %s)",
            self.ctx.name,
            _redact(subscription.endpoint),
            subscription.id,
        )
        return session

    async def _authentication_response(self, session: Session) -> dict[str, Any]:
        while True:
            raw = await session.ws.recv()
            message = await self._convert(session, raw)
            if message is None:
                continue  # refused: counted, logged and kept by the core
            if message.kind is ServerMessage.AUTHENTICATION_RESPONSE:
                return dict(message.doc)
            if message.kind is ServerMessage.NOTIFICATION:  # not expected yet; keep it
                await self.intake.emit(message.events)

    async def _convert(self, session: Session, raw: str | bytes) -> Converted | None:
        """Decode, classify and map one message in ``ctx.convert``; None if it was refused.

        Whatever a single message raises there (too deep a nesting, a schema
        break, a bug in a mapping) makes it a dead letter, counted on
        ``/metrics``, and the connection carries on.
        """
        intake = self.intake
        return await self.ctx.convert(
            raw, lambda: intake.convert(raw), subscription=session.subscription.id
        )

    async def _on_status(self, session: Session, doc: dict[str, Any], started: float) -> None:
        """Act on an ``authenticationResponse`` (at connect time or later)."""
        status = doc.get("status")
        self.auth_statuses[str(status)] += 1
        if status == AuthStatus.CONFIRMED:
            interval = doc.get("pingInterval")
            if _positive(interval):
                session.subscription.ping_interval = float(interval)
            expires = doc.get("expiresInterval")
            if _positive(expires):
                session.subscription.shorten(float(expires))
            return
        if status == AuthStatus.INVALID_TOKEN:
            assert self.tokens is not None
            self.tokens.invalidate(session.token)
            raise self._stale(
                session.token.fetched_at >= started, "the server refused the token (INVALID_TOKEN)"
            )
        if status == AuthStatus.UNKNOWN_SUBSCRIPTION:
            if self.subscription is session.subscription:
                self.subscription = None
            raise self._stale(
                session.subscription.created_at >= started,
                f"the server does not know subscription {session.subscription.id} "
                "(UNKNOWN_SUBSCRIPTION)",
            )
        if status == AuthStatus.INTERNAL_SERVER_ERROR:
            raise Transient("the server failed to authenticate us (INTERNAL_SERVER_ERROR)")
        if status == AuthStatus.CONSTRAINT_VIOLATION:
            said = await self._close_reason(session)
            raise Misconfigured(
                "the server refused our authentication message as malformed "
                f"(CONNECTION_FAILED_CONSTRAINT_VIOLATION); it said {json.dumps(doc)}"
                + (f" and closed with {said!r}" if said else "")
                + "; check account_id and events, or report it: the message follows the document"
            )
        raise Transient(f"unexpected authentication status {status!r:.80}")

    def _stale(self, fresh: bool, message: str) -> Exception:
        """RetryNow if a cached token/subscription was refused; a fresh one refused: back off."""
        return Transient(message + " (even though fresh)") if fresh else RetryNow(message)

    async def _close_reason(self, session: Session) -> str:
        """The server's close reason, if it closes within a moment of refusing us."""
        with anyio.move_on_after(0.5):
            await session.ws.wait_closed()
        return session.ws.close_reason or ""

    # -- connected ----------------------------------------------------------------------

    async def _pump(self, session: Session) -> None:
        """Read until the connection closes; notifications go to the bus in order."""
        ws = session.ws
        intake = self.intake
        try:
            async for raw in ws:
                session.last_seen = time.monotonic()
                message = await self._convert(session, raw)
                if message is None:
                    continue  # refused: counted, logged and kept by the core
                if message.kind is ServerMessage.NOTIFICATION:
                    await intake.emit(message.events)  # outside convert: a bus failure is ours
                elif message.kind is ServerMessage.PONG:
                    self.pongs += 1  # last_seen, set above, is what answers the ping
                elif message.kind is ServerMessage.AUTHENTICATION_RESPONSE:
                    # mid-session: never fresh
                    await self._on_status(session, message.doc, math.inf)
            failure: Exception = Transient(f"closed by the server ({_code(ws)})")
        except ConnectionClosed as err:
            await self._refused_too_big(err, ws)
            failure = Transient(f"connection lost ({_closed(err)})")
        except (Transient, RetryNow, Misconfigured) as err:  # a status sent mid-session
            failure = err
        # the session stays in self.sessions until _close(): whoever ends the period closes it
        if session is self.current and not session.retired:
            raise failure

    async def _refused_too_big(self, err: ConnectionClosed, ws: ClientConnection) -> None:
        """Count and dead-letter a message websockets refused for its size, if that ended ``err``.

        websockets closes the connection (1009) as soon as it reads past the
        limit, so the message never reaches the pump; without
        this it would vanish with nothing but a reconnect to show for it.
        Only what is known about it is kept: its size (as far as the
        library read it), the limit and, from the dead-letter record, when.
        """
        compressed = bool(ws.protocol.extensions)  # permessage-deflate is the only one offered
        problem = _too_big(err, self.options.max_message_bytes, compressed=compressed)
        if problem is not None:
            await self.ctx.refuse(problem.reason, problem.detail)

    async def _keepalive(self, session: Session) -> None:
        """Ping every period, whatever the pongs; a ping unanswered too long is a dead link.

        Any message answers a ping (the server is evidently alive), not only
        its pong.  The next ping never waits for the last one's answer: the
        server closes the connection and sets the subscription INACTIVE when
        no ping arrives within its pingInterval, so one lost pong must not
        hold back the pings that keep the subscription alive.
        """
        next_ping = time.monotonic() + self._ping_period(session.subscription)
        while True:
            await anyio.sleep(max(0.0, min(next_ping, self._dead_at(session)) - time.monotonic()))
            if session.retired:
                return
            now = time.monotonic()
            if now >= self._dead_at(session):
                if session is not self.current:
                    return
                raise Transient(
                    f"no pong within {self._pong_wait(session.subscription):g}s of a ping: "
                    "the connection is dead"
                )
            if now >= next_ping:
                if not await self._ping(session):
                    return  # the pump reports the closed connection
                next_ping = now + self._ping_period(session.subscription)

    async def _ping(self, session: Session) -> bool:
        """Send one ping; False if the connection is already closed."""
        sent = time.monotonic()
        try:
            await session.ws.send(ping_message(session.subscription.id))
        except ConnectionClosed:
            return False
        self.pings += 1
        oldest = session.unanswered_since
        if oldest is None or session.last_seen >= oldest:  # every earlier ping was answered
            session.unanswered_since = sent
        return True

    def _dead_at(self, session: Session) -> float:
        """When the oldest unanswered ping makes the connection dead; inf if none is waiting."""
        oldest = session.unanswered_since
        if oldest is None or session.last_seen >= oldest:
            return math.inf
        return oldest + self._pong_wait(session.subscription)

    def _pong_wait(self, subscription: Subscription) -> float:
        """How long a ping may go unanswered: ``pong_timeout``, capped by the server.

        A link that dies just after a pong is pinged within one ping period,
        so capping the wait at pingInterval minus that period notices it
        within pingInterval, no later than the server gives the
        subscription up for want of pings.
        """
        wait = self.options.pong_timeout
        if subscription.ping_interval:
            wait = min(wait, subscription.ping_interval - self._ping_period(subscription))
        return wait

    def _ping_period(self, subscription: Subscription) -> float:
        period = self.options.ping_every
        if subscription.ping_interval:
            period = min(period, subscription.ping_interval * PING_INTERVAL_MARGIN)
        return period

    async def _renewals(self) -> None:
        """Before the subscription expires, hand over to a new one (make-before-break)."""
        while True:
            assert self.current is not None
            old = self.current
            await anyio.sleep(max(0.0, old.subscription.renew_at(self.options.renew_before)
                                  - time.monotonic()))
            new = await self._successor(old)
            self.current = new
            self._spawn(new)
            old.retired = True
            self.log.info(
                "avaya %s: renewed: subscription %s replaces %s",
                self.ctx.name,
                new.subscription.id,
                old.subscription.id,
            )
            await self._close(old, 1000, "subscription renewed")

    async def _successor(self, old: Session) -> Session:
        """A new subscription and session; retried until the old subscription expires."""
        backoff = Backoff(initial=self.options.backoff_initial, cap=self.options.backoff_cap)
        while True:
            started = time.monotonic()
            try:
                subscription = await self._create_subscription()
                return await self._open(subscription, started)
            except (Misconfigured, RetryNow, *RETRYABLE) as err:
                left = old.subscription.expires_at - time.monotonic()
                if left <= 0:
                    raise
                delay = min(backoff.next_delay(), left)
                self.failures["renewal"] += 1
                self.log.warning(
                    "avaya %s: renewing the subscription failed: %s; trying again in %.1fs "
                    "(the current one expires in %.0fs)",
                    self.ctx.name,
                    _describe(err),
                    delay,
                    left,
                )
                await anyio.sleep(delay)

    async def _close(self, session: Session, code: int, reason: str) -> None:
        with anyio.move_on_after(CLOSE_TIMEOUT):
            try:
                await session.ws.close(code, reason)
            except Exception:  # closing a broken connection may fail; it is gone either way
                pass
        self.sessions.discard(session)

    # -- transport details --------------------------------------------------------------

    def _proxy(self, url: str) -> str | Literal[True] | None:
        """Loopback is always direct (websockets >= 15 would use system proxies)."""
        if _is_loopback(url) or self.options.proxy == "none":
            return None
        return True if self.options.proxy == "system" else self.options.proxy

    def _ssl(self, url: str) -> ssl.SSLContext | None:
        if not url.startswith("wss:"):
            return None
        context = ssl.create_default_context()
        if not self.options.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _too_big(err: ConnectionClosed, limit: int, *, compressed: bool = False) -> Problem | None:
    """A ``message_too_big`` problem if ``err`` is our own 1009 close; None otherwise.

    The size is what websockets had seen: a frame header's length (plus the
    fragments before it), which is compressed bytes when permessage-deflate
    is on; or, when inflating crossed the limit, only that it was larger.
    """
    if err.sent is None or err.sent.code != CloseCode.MESSAGE_TOO_BIG:
        return None
    cause = err.__cause__
    frame: int | None = getattr(cause, "size", None)  # absent from the deprecated form
    if not isinstance(cause, PayloadTooBig):  # too many fragments: no size at all
        what = f"a message of unknown size ({err.sent.reason or 'no reason given'})"
    elif frame is not None:
        size = frame + (cause.current_size or 0)
        what = f"a message of {size} {'compressed ' if compressed else ''}bytes"
    else:
        what = f"a message of more than {limit} bytes once decompressed"
    return Problem(
        "message_too_big",
        f"{what} exceeds max_message_bytes ({limit}); websockets closed the connection "
        "with 1009 before reading all of it, and the source reconnects: messages the server sends "
        "until it is back are lost",
    )


def _positive(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _code(ws: ClientConnection) -> str:
    return f"code {ws.close_code}" + (f": {ws.close_reason}" if ws.close_reason else "")


def _closed(err: ConnectionClosed) -> str:
    frame = err.rcvd or err.sent
    if frame is None:
        return "no close frame"
    return f"code {frame.code}" + (f": {frame.reason}" if frame.reason else "")


def _redact(url: str) -> str:
    """The endpoint without its query string (which might carry a token)."""
    return url.split("?", 1)[0]


def _describe(err: BaseException) -> str:
    text = str(err)
    if isinstance(err, (Transient, Misconfigured, RetryNow)):
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
