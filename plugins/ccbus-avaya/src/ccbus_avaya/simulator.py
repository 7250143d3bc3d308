"""A simulator of Avaya's side: the A&A token endpoint, the subscription REST API and the
Agent & Engagement WebSocket channel, following the AsyncAPI document.

It is a user feature (``ccbus simulate avaya``), the peer of the plugin's
tests, the live part of ``ccbus demo`` and the benchmark's sender, so it is
an ordinary async context manager bound to 127.0.0.1 on a free port::

    async with AvayaSimulator() as sim:
        options = sim.source_options()      # base_url, account_id, client_id, client_secret
        ...                                 # point an `avaya` source at it
        await sim.wait_connected()
        await sim.publish({"event": "AgentState", "agentId": "a1", "state": "READY"})
        sim.drop_connections()              # fault injection, see below

What it does, per the document:

* ``POST /auth/realms/<realm>/protocol/openid-connect/token``: OAuth2 client
  credentials (form or HTTP Basic); tokens live ``token_ttl`` seconds.
* ``POST /api/notification/v1/accounts/<account>/subscriptions``: checks the
  bearer token, the family, events and transport; answers with the
  document's fields (``subscriptionId``, ``expiresAt``, ``expiresIn``,
  ``transport.endpoint``, ``transport.pingInterval`` ...).
* ``/ws/notification/v1/agent-engagement/<account>/<subscriptionId>``: the
  first message must be ``authentication``; the answer is one of the five
  ``authenticationResponse`` statuses (malformed message: CONSTRAINT_VIOLATION;
  bad token: INVALID_TOKEN; unknown or inactive subscription:
  UNKNOWN_SUBSCRIPTION; forced: any of them, INTERNAL_SERVER_ERROR included),
  then notifications; every ``ping`` is answered with ``pong``; no ping
  within ``pingInterval`` closes the connection and sets the subscription
  INACTIVE; at ``expiresAt`` the subscription becomes INACTIVE and its
  connections are closed.
* WEBHOOK subscriptions get each notification POSTed to their endpoint.

Fault injection (methods here, and ``POST /_sim/...`` for the CLI):
``drop_connections`` (close with 1011), ``expire_subscriptions``,
``reject_tokens`` (revoke every token: sessions get INVALID_TOKEN and are
closed, the REST API answers 401), ``force_auth_status`` (the next N
authentications), ``set_pongs(False)`` (a silent, half-dead connection),
``fail_token_requests``.  ``publish_raw`` sends anything, schema-breaking
or not; ``blast`` sends N notifications as fast as it can.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import anyio
import anyio.abc
import httpx
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ccbus import serve_asgi, simulator_control_routes

from .protocol import (
    BODY_EVENTS,
    FAMILY,
    PING,
    AuthStatus,
    authentication_response,
    pong_message,
    validate_authentication,
    validate_ping,
)
from .scenarios import Step, blast_bodies, contact_center

__all__ = ["AvayaSimulator", "SimSubscription"]

DEFAULT_ACCOUNT = "KXBQTZ"
DEFAULT_CLIENT_ID = "ccbus-demo"
DEFAULT_CLIENT_SECRET = "simulator-secret"
WS_PATH = "/ws/notification/v1/agent-engagement"

SCENARIOS: dict[str, Callable[[], list[Step]]] = {"contact-center": contact_center}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class SimSubscription:
    id: str
    transport: str
    events: list[str]
    endpoint: str
    ping_interval: int
    expires_in: float
    created_at: datetime
    expires_at: float  # monotonic
    status: str = "ACTIVE"

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE" and time.monotonic() < self.expires_at

    def answer(self) -> dict[str, Any]:
        """The document's response body for this subscription."""
        return {
            "subscriptionId": self.id,
            "createdAt": _iso(self.created_at),
            "expiresAt": _iso(self.created_at + timedelta(seconds=self.expires_in)),
            "expiresIn": int(self.expires_in) if self.expires_in >= 1 else self.expires_in,
            "status": "ACTIVE" if self.active else "INACTIVE",
            "family": FAMILY,
            "events": self.events,
            "transport": {
                "type": self.transport,
                "endpoint": self.endpoint,
                "pingInterval": self.ping_interval,
            },
        }


@dataclass(eq=False, slots=True)
class SimSession:
    """One client WebSocket connection, as the server sees it."""

    websocket: WebSocket
    subscription: SimSubscription | None = None
    token: str = ""
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    close_requested: anyio.Event = field(default_factory=anyio.Event)
    close_code: int = 1000
    close_reason: str = ""
    #: a last message to send before closing (INVALID_TOKEN when a token is revoked)
    farewell: str | None = None
    gone: bool = False

    def request_close(self, code: int, reason: str, farewell: str | None = None) -> None:
        if not self.close_requested.is_set():
            self.close_code, self.close_reason, self.farewell = code, reason[:120], farewell
            self.close_requested.set()

    async def send(self, text: str) -> bool:
        if self.gone or self.close_requested.is_set():
            return False
        async with self.lock:
            try:
                await self.websocket.send_text(text)
            except Exception:  # the client went away mid-send: it is gone
                self.gone = True
                return False
        return True


@dataclass(slots=True)
class SimStats:
    token_requests: int = 0
    tokens_issued: int = 0
    subscriptions_created: int = 0
    connections: int = 0
    auth: Counter[str] = field(default_factory=Counter)
    pings: int = 0
    pongs: int = 0
    published: int = 0
    delivered: int = 0
    undelivered: int = 0
    webhook_posts: int = 0
    webhook_failures: int = 0
    closed_no_ping: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            name: dict(getattr(self, name)) if name == "auth" else getattr(self, name)
            for name in self.__slots__
        }


class AvayaSimulator:
    """Avaya's token service, Notification REST API and WebSocket channel on loopback."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        account_id: str = DEFAULT_ACCOUNT,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        token_ttl: float = 3600.0,
        expires_in: float = 900.0,
        ping_interval: int = 300,
        auth_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.account_id = account_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.expires_in = expires_in
        self.ping_interval = ping_interval
        self.auth_timeout = auth_timeout
        self.stats = SimStats()
        self.subscriptions: dict[str, SimSubscription] = {}
        self.sessions: set[SimSession] = set()
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.pongs = True
        self._forced: deque[AuthStatus] = deque()
        self._token_failures = 0
        self._token_failure_status = 503
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        self._changed = anyio.Event()
        self._tg: TaskGroup | None = None
        self._server: TaskGroup | None = None
        self._http: httpx.AsyncClient | None = None
        self._sock: socket.socket | None = None
        self.app = self._build_app()

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> AvayaSimulator:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._http = httpx.AsyncClient(timeout=5.0, trust_env=False)
        self._server = anyio.create_task_group()
        await self._server.__aenter__()
        await self._server.start(self._serve_http, sock)
        # background work (expiry, scenarios) lives in a group of its own: it is cancelled at
        # exit, while Hypercorn is stopped gracefully (cancelling it mid-shutdown trips its
        # InvalidStateError)
        self._tg = await self._server.start(self._background)
        self._tg.start_soon(self._expire_forever)
        return self

    async def _serve_http(
        self, sock: socket.socket, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        try:
            await serve_asgi(self.app, sock, self._stop, task_status=task_status)
        finally:
            self._stopped.set()

    async def _background(self, *, task_status: anyio.abc.TaskStatus[TaskGroup]) -> None:
        async with anyio.create_task_group() as tg:
            task_status.started(tg)
            await self._stop.wait()
            tg.cancel_scope.cancel()

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._server is not None
        with anyio.CancelScope(shield=True):  # stop cleanly even when the caller is cancelled
            for session in list(self.sessions):
                session.request_close(1001, "simulator stopping")
            with anyio.move_on_after(3):
                await self.wait_for(lambda: not self.sessions, within=3)
            self._stop.set()  # ends the background group and, gracefully, Hypercorn
            await self._stopped.wait()
            if self._http is not None:
                await self._http.aclose()
        await self._server.__aexit__(None, None, None)  # nothing left to wait for

    @property
    def url(self) -> str:
        """The base URL: REST API, token service and control API (``/_sim``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/auth/realms/{self.account_id}/protocol/openid-connect/token"

    def source_options(self) -> dict[str, Any]:
        """The options an ``avaya`` source needs to use this simulator."""
        return {
            "base_url": self.url,
            "account_id": self.account_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }

    # -- waiting (tests, demo, benchmark) -----------------------------------------------

    def connected_sessions(self) -> list[SimSession]:
        return [s for s in self.sessions if s.subscription is not None and not s.gone]

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever the simulator's state changes.

        Raises ``TimeoutError`` after ``within`` seconds.
        """
        with anyio.fail_after(within):
            while not predicate():
                with anyio.move_on_after(0.05):
                    await self._changed.wait()

    async def wait_connected(self, count: int = 1, within: float = 5.0) -> None:
        """Wait until ``count`` sessions in total have been confirmed, one of them still open."""
        confirmed = self.stats.auth
        await self.wait_for(
            lambda: confirmed[AuthStatus.CONFIRMED] >= count and bool(self.connected_sessions()),
            within,
        )

    def _touch(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- fault injection ----------------------------------------------------------------

    def drop_connections(self, code: int = 1011, reason: str = "dropped by the simulator") -> int:
        """Close every client connection (the subscriptions stay valid)."""
        sessions = list(self.sessions)
        for session in sessions:
            session.request_close(code, reason)
        return len(sessions)

    def expire_subscriptions(self) -> int:
        """Expire every active subscription now; their connections are closed."""
        expired = [s for s in self.subscriptions.values() if s.active]
        for subscription in expired:
            self._expire(subscription, "subscription expired")
        return len(expired)

    def reject_tokens(self) -> int:
        """Revoke every token issued so far, mid-session: clients must fetch new ones."""
        revoked = len(self.tokens)
        self.tokens.clear()
        for session in list(self.sessions):
            if session.subscription is not None:
                session.request_close(
                    1008,
                    "token revoked",
                    farewell=authentication_response(
                        AuthStatus.INVALID_TOKEN, session.subscription.id
                    ),
                )
        return revoked

    def force_auth_status(self, status: AuthStatus | str, count: int = 1) -> None:
        """Answer the next ``count`` authentications with ``status``, whatever they carry."""
        self._forced.extend([AuthStatus(status)] * count)

    def set_pongs(self, enabled: bool) -> None:
        """Stop (or resume) answering pings: a connection that is open but dead."""
        self.pongs = enabled

    def fail_token_requests(self, count: int = 1, status: int = 503) -> None:
        """Answer the next ``count`` token requests with HTTP ``status``."""
        self._token_failures, self._token_failure_status = count, status

    # -- sending ------------------------------------------------------------------------

    def envelope(
        self,
        subscription: SimSubscription,
        body: dict[str, Any],
        correlation_id: str,
        logins: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "correlationId": correlation_id,
            "subscriptionId": subscription.id,
            "family": FAMILY,
            "sentAt": _iso(datetime.now(UTC)),
            "accountId": self.account_id,
        }
        doc.update(logins or {})
        doc["body"] = body
        return doc

    async def publish(
        self,
        body: dict[str, Any],
        logins: dict[str, str] | None = None,
        *,
        correlation_id: str | None = None,
    ) -> str:
        """Send one notification to every active subscription that wants its event.

        The same ``correlationId`` goes to every subscription (assumed: it
        identifies the notification).  Returns it.
        """
        correlation_id = correlation_id or str(uuid.uuid4())
        if "timestamp" not in body:
            body = {**body, "timestamp": _now_ms()}
        self.stats.published += 1
        delivered = 0
        for subscription in self._receivers(str(body.get("event"))):
            text = json.dumps(self.envelope(subscription, body, correlation_id, logins))
            delivered += await self._deliver(subscription, text)
        if not delivered:
            self.stats.undelivered += 1
        return correlation_id

    async def publish_notification(self, doc: dict[str, Any]) -> int:
        """Send a complete notification (a recorded one) as it is; returns deliveries."""
        return await self.publish_raw(json.dumps(doc))

    async def publish_raw(self, text: str) -> int:
        """Send any text to every active subscription: the way to send broken messages."""
        delivered = 0
        for subscription in self._receivers(None):
            delivered += await self._deliver(subscription, text)
        return delivered

    async def play(self, steps: Iterable[Step], *, speed: float = 1.0) -> int:
        """Publish a scenario's steps with their pauses (``speed`` 2 = twice as fast)."""
        sent = 0
        for step in steps:
            if step.delay > 0:
                await anyio.sleep(step.delay / speed if speed > 0 else 0)
            await self.publish(step.body, step.envelope)
            sent += 1
        return sent

    def play_when_connected(self, steps: Iterable[Step], *, speed: float = 1.0) -> None:
        """In the background: wait for a client, then play ``steps`` (for the demo)."""
        assert self._tg is not None
        materialized = list(steps)

        async def run() -> None:
            await self.wait_for(lambda: bool(self.connected_sessions()), within=60)
            await self.play(materialized, speed=speed)

        self._tg.start_soon(run)

    async def blast(self, count: int, *, rate: float | None = None) -> dict[str, float]:
        """Send ``count`` AgentState notifications to every connected session.

        Flat out by default: the texts are built first, so only sending is
        timed.  With ``rate`` (notifications per second) they are paced and
        each carries its own ``sentAt`` (with microseconds), so a receiver
        can measure latency.  Returns ``sent``, ``seconds`` and ``started_at``
        (wall clock, for receivers on the same host).
        """
        bodies = blast_bodies(count)
        run = uuid.uuid4().hex[:8]  # a second blast must not look like duplicates of the first
        plans: list[tuple[SimSession, str]] = []
        for session in self.connected_sessions():
            assert session.subscription is not None
            head = (
                f'"subscriptionId": "{session.subscription.id}", "family": "{FAMILY}", '
                f'"accountId": "{self.account_id}"'
            )
            plans.append((session, head))
        sent = 0
        started_at = time.time()
        started = time.perf_counter()
        for session, head in plans:
            send = session.websocket.send_text
            async with session.lock:
                if rate is None:
                    sent_at = _iso(datetime.now(UTC))
                    texts = [
                        f'{{"correlationId": "blast-{run}-{i:08d}", {head}, '
                        f'"sentAt": "{sent_at}", "body": {body}}}'
                        for i, body in enumerate(bodies)
                    ]
                    started_at, started = time.time(), time.perf_counter()
                    for text in texts:
                        await send(text)
                        sent += 1
                    continue
                for i, body in enumerate(bodies):
                    due = started + i / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await anyio.sleep(delay)
                    sent_at = datetime.now(UTC).isoformat(timespec="microseconds")
                    await send(
                        f'{{"correlationId": "blast-{run}-{i:08d}", {head}, '
                        f'"sentAt": "{sent_at.replace("+00:00", "Z")}", "body": {body}}}'
                    )
                    sent += 1
        self.stats.published += count
        self.stats.delivered += sent
        return {"sent": sent, "seconds": time.perf_counter() - started, "started_at": started_at}

    def _receivers(self, event: str | None) -> list[SimSubscription]:
        return [
            s
            for s in self.subscriptions.values()
            if s.active and (event is None or "ALL" in s.events or event in s.events)
        ]

    async def _deliver(self, subscription: SimSubscription, text: str) -> int:
        if subscription.transport == "WEBHOOK":
            return await self._post(subscription, text)
        delivered = 0
        for session in self.connected_sessions():
            if session.subscription is subscription and await session.send(text):
                delivered += 1
        self.stats.delivered += delivered
        return delivered

    async def _post(self, subscription: SimSubscription, text: str) -> int:
        assert self._http is not None
        for attempt in range(3):
            try:
                response = await self._http.post(
                    subscription.endpoint,
                    content=text,
                    headers={"Content-Type": "application/json"},
                )
                if response.status_code < 500:
                    self.stats.webhook_posts += 1
                    self.stats.delivered += 1
                    return 1
            except httpx.HTTPError:
                pass
            await anyio.sleep(0.1 * (attempt + 1))
        self.stats.webhook_failures += 1
        return 0

    # -- HTTP: token service and REST API -----------------------------------------------

    def _build_app(self) -> Starlette:
        routes: list[Any] = [
            Route(
                "/auth/realms/{realm}/protocol/openid-connect/token", self._token, methods=["POST"]
            ),
            Route(
                "/api/notification/v1/accounts/{account_id}/subscriptions",
                self._subscribe,
                methods=["POST"],
            ),
            WebSocketRoute(WS_PATH + "/{account_id}/{subscription_id}", self._websocket),
            WebSocketRoute(WS_PATH, self._websocket),
            *simulator_control_routes(self._control_actions(), self.status),
        ]
        return Starlette(routes=routes)

    async def _token(self, request: Request) -> JSONResponse:
        self.stats.token_requests += 1
        if self._token_failures > 0:
            self._token_failures -= 1
            return JSONResponse(
                {"error": "temporarily_unavailable"}, status_code=self._token_failure_status
            )
        text = (await request.body()).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(text).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                pass
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "use client_credentials"},
                status_code=400,
            )
        if client_id != self.client_id or client_secret != self.client_secret:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Invalid client credentials"},
                status_code=401,
            )
        token = secrets.token_urlsafe(32)
        self.tokens[token] = time.monotonic() + self.token_ttl
        self.stats.tokens_issued += 1
        return JSONResponse(
            {
                "access_token": token,
                "expires_in": int(self.token_ttl) if self.token_ttl >= 1 else self.token_ttl,
                "token_type": "Bearer",
                "scope": "",
            }
        )

    def _token_valid(self, token: str) -> bool:
        expiry = self.tokens.get(token)
        return expiry is not None and time.monotonic() < expiry

    async def _subscribe(self, request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not self._token_valid(header[7:]):
            return _problem(401, "UNAUTHORIZED", "missing, invalid or expired bearer token")
        if request.path_params["account_id"] != self.account_id:
            account = request.path_params["account_id"]
            return _problem(404, "NOT_FOUND", f"account {account} not found")
        try:
            doc = json.loads(await request.body())
        except ValueError:
            return _problem(400, "BAD_REQUEST", "the body is not JSON")
        problem = _subscription_problem(doc)
        if problem:
            return _problem(400, "BAD_REQUEST", problem)
        transport = doc["transport"]["type"]
        subscription_id = str(uuid.uuid4())
        if transport == "WEBSOCKET":
            host = f"[{self.host}]" if ":" in self.host else self.host
            endpoint = f"ws://{host}:{self.port}{WS_PATH}/{self.account_id}/{subscription_id}"
        else:
            endpoint = doc["transport"]["endpoint"]
        subscription = SimSubscription(
            id=subscription_id,
            transport=transport,
            events=list(doc.get("events") or ["ALL"]),
            endpoint=endpoint,
            ping_interval=self.ping_interval,
            expires_in=self.expires_in,
            created_at=datetime.now(UTC),
            expires_at=time.monotonic() + self.expires_in,
        )
        self.subscriptions[subscription_id] = subscription
        self.stats.subscriptions_created += 1
        self._touch()
        return JSONResponse(subscription.answer(), status_code=201)

    # -- WebSocket channel --------------------------------------------------------------

    async def _websocket(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.stats.connections += 1
        session = SimSession(websocket)
        self.sessions.add(session)
        try:
            await self._serve(session, websocket.path_params.get("subscription_id"))
        except WebSocketDisconnect:
            pass
        finally:
            session.gone = True
            self.sessions.discard(session)
            self._touch()

    async def _serve(self, session: SimSession, path_subscription: str | None) -> None:
        websocket = session.websocket
        with anyio.move_on_after(self.auth_timeout) as waited:
            message = await websocket.receive()
        if waited.cancelled_caught:
            await websocket.close(1008, "no authentication message")
            return
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
        status, subscription, token, detail = self._authenticate(text, path_subscription)
        self.stats.auth[status] += 1
        answer_id = subscription.id if subscription else path_subscription
        if status != AuthStatus.CONFIRMED:
            await websocket.send_text(authentication_response(status, answer_id))
            self._touch()
            code = 1011 if status == AuthStatus.INTERNAL_SERVER_ERROR else 1008
            await websocket.close(code, f"{status}: {detail}"[:120])
            return
        assert subscription is not None
        left = max(0, int(subscription.expires_at - time.monotonic()))
        await websocket.send_text(
            authentication_response(
                status,
                subscription.id,
                ping_interval=subscription.ping_interval,
                expires_interval=left,
            )
        )
        session.subscription, session.token = subscription, token
        self._touch()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._receive, session)
            await session.close_requested.wait()
            tg.cancel_scope.cancel()
        if session.gone:
            return
        session.gone = True
        if session.farewell:
            async with session.lock:
                await websocket.send_text(session.farewell)
        await websocket.close(session.close_code, session.close_reason)

    def _authenticate(
        self, text: str, path_subscription: str | None
    ) -> tuple[AuthStatus, SimSubscription | None, str, str]:
        """The status for a first message, the subscription and token it named, and why."""
        try:
            doc: Any = json.loads(text)
        except ValueError:
            doc = None
        subscription_id = doc.get("subscriptionId") if isinstance(doc, dict) else None
        subscription = self.subscriptions.get(subscription_id) if subscription_id else None
        token = str(doc.get("token", "")) if isinstance(doc, dict) else ""
        if self._forced:
            return self._forced.popleft(), subscription, token, "forced by the simulator"
        if doc is None:
            return AuthStatus.CONSTRAINT_VIOLATION, None, "", "the first message is not JSON"
        problems = validate_authentication(doc)
        if problems:
            return AuthStatus.CONSTRAINT_VIOLATION, subscription, token, str(problems[0])
        if not self._token_valid(token):
            return AuthStatus.INVALID_TOKEN, subscription, token, "token unknown or expired"
        if (
            subscription is None
            or not subscription.active
            or subscription.transport != "WEBSOCKET"
            or (path_subscription is not None and path_subscription != subscription_id)
        ):
            why = "no such active subscription"
            return AuthStatus.UNKNOWN_SUBSCRIPTION, subscription, token, why
        return AuthStatus.CONFIRMED, subscription, token, ""

    async def _receive(self, session: SimSession) -> None:
        """Pings in, pongs out; no ping within pingInterval ends the subscription."""
        assert session.subscription is not None
        websocket = session.websocket
        while True:
            with anyio.move_on_after(session.subscription.ping_interval) as waited:
                message = await websocket.receive()
            if waited.cancelled_caught:
                self.stats.closed_no_ping += 1
                session.subscription.status = "INACTIVE"
                session.request_close(1008, "no ping within pingInterval: subscription INACTIVE")
                return
            if message["type"] == "websocket.disconnect":
                session.gone = True
                session.close_requested.set()
                return
            text = message.get("text") or ""
            try:
                doc = json.loads(text)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("event") == PING and not validate_ping(doc):
                self.stats.pings += 1
                if self.pongs:
                    self.stats.pongs += 1
                    await session.send(pong_message())
                self._touch()

    async def _expire_forever(self) -> None:
        while True:
            await anyio.sleep(0.05)
            now = time.monotonic()
            for subscription in list(self.subscriptions.values()):
                if subscription.status == "ACTIVE" and now >= subscription.expires_at:
                    self._expire(subscription, "subscription expired")

    def _expire(self, subscription: SimSubscription, reason: str) -> None:
        subscription.status = "INACTIVE"
        subscription.expires_at = min(subscription.expires_at, time.monotonic())
        for session in list(self.sessions):
            if session.subscription is subscription:
                session.request_close(1000, reason)
        self._touch()

    # -- control API (``ccbus simulate avaya inject ...``) --------------------------------

    def status(self) -> dict[str, Any]:
        """Counters, connected sessions, subscriptions and pongs: ``GET /_sim/status``."""
        return {
            "stats": self.stats.as_dict(),
            "sessions": len(self.connected_sessions()),
            "subscriptions": {s.id: s.answer() for s in self.subscriptions.values()},
            "pongs": self.pongs,
        }

    def _control_actions(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]:
        """``POST /_sim/<action>``: what ``ccbus simulate avaya inject`` calls."""
        async def drop(p: dict[str, Any]) -> dict[str, Any]:
            return {"closed": self.drop_connections(int(p.get("code", 1011)))}

        async def expire(p: dict[str, Any]) -> dict[str, Any]:
            return {"expired": self.expire_subscriptions()}

        async def reject_token(p: dict[str, Any]) -> dict[str, Any]:
            return {"revoked": self.reject_tokens()}

        async def auth_status(p: dict[str, Any]) -> dict[str, Any]:
            status = str(p["status"])
            if status == "CONFIRMED":
                status = "CONNECTION_CONFIRMED"
            elif not status.startswith("CONNECTION_"):
                status = "CONNECTION_FAILED_" + status
            self.force_auth_status(AuthStatus(status), int(p.get("count", 1)))
            return {"forced": status}

        async def pongs(p: dict[str, Any]) -> dict[str, Any]:
            self.set_pongs(bool(p.get("enabled", False)))
            return {"pongs": self.pongs}

        async def fail_token(p: dict[str, Any]) -> dict[str, Any]:
            self.fail_token_requests(int(p.get("count", 1)), int(p.get("status", 503)))
            return {}

        async def publish(p: dict[str, Any]) -> dict[str, Any]:
            if "raw" in p:
                return {"delivered": await self.publish_raw(str(p["raw"]))}
            if "notification" in p:
                return {"delivered": await self.publish_notification(p["notification"])}
            body = p["body"]
            if not isinstance(body, dict) or body.get("event") not in BODY_EVENTS:
                raise ValueError(f"body.event must be one of {', '.join(BODY_EVENTS)}")
            return {"correlationId": await self.publish(body, p.get("logins"))}

        async def scenario(p: dict[str, Any]) -> dict[str, Any]:
            name = str(p.get("name", "contact-center"))
            steps = SCENARIOS[name]()
            assert self._tg is not None
            self._tg.start_soon(lambda: self.play(steps, speed=float(p.get("speed", 1.0))))
            return {"steps": len(steps)}

        async def blast(p: dict[str, Any]) -> dict[str, Any]:
            rate = p.get("rate")
            return await self.blast(
                int(p.get("count", 10_000)), rate=float(rate) if rate else None
            )

        return {
            "drop": drop,
            "expire": expire,
            "reject-token": reject_token,
            "auth-status": auth_status,
            "pongs": pongs,
            "fail-token": fail_token,
            "publish": publish,
            "scenario": scenario,
            "blast": blast,
        }


def _problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def _subscription_problem(doc: Any) -> str | None:
    """Why a subscription request is refused (400), or None."""
    if not isinstance(doc, dict):
        return "the body must be a JSON object"
    extra = doc.keys() - {"family", "events", "transport"}
    if extra:
        return f"unknown field(s): {', '.join(sorted(extra))}"
    if doc.get("family") != FAMILY:
        return f"family must be {FAMILY!r}"
    events = doc.get("events", ["ALL"])
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        return "events must be a non-empty list of event names"
    unknown = [e for e in events if e != "ALL" and e not in BODY_EVENTS]
    if unknown:
        return f"unknown event(s): {', '.join(unknown)}"
    transport = doc.get("transport")
    if not isinstance(transport, dict) or transport.get("type") not in ("WEBSOCKET", "WEBHOOK"):
        return "transport.type must be WEBSOCKET or WEBHOOK"
    if transport["type"] == "WEBHOOK":
        endpoint = transport.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            return "a WEBHOOK transport needs an http(s) endpoint"
    return None
