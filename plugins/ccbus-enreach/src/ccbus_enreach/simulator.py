"""A simulator of Enreach's side: the REST token call and the RTE SignalR hub, on loopback.

It is a user feature (``ccbus simulate enreach``), the peer of the plugin's
tests (Python's signalrcore and Microsoft's JavaScript client both talk to
it), the live part of ``ccbus demo`` and the benchmark's sender::

    async with RteSimulator() as sim:
        options = sim.source_options()        # api_url, username, secret
        ...                                   # point an `enreach` source at it
        await sim.wait_subscribed(3)
        await sim.publish("UserStatus", user_id, {"Talking": True})
        await sim.restart()                   # fault injection, see below

What it implements, per the RTE document and ASP.NET Core SignalR:

* ``GET /token/{userid}/rte/`` (HTTP Basic: user name and secret): ``{"WssEndpoint",
  "Token"}``, the token a signed JWT (HS256, PyJWT) living ``token_ttl`` seconds;
  ``userid`` is ``me`` or the API user's GUID.
* ``POST /rte/negotiate``: the token as ``Authorization: Bearer`` or
  ``access_token`` query (what browsers send); negotiateVersion 0 or 1 as asked.
* ``/rte`` WebSocket: the same token check (401 before the upgrade), the
  negotiated ``id`` (404 if unknown), the JSON hub protocol's handshake, a
  ping every ``keepalive`` seconds, and the client dropped after
  ``client_timeout`` seconds of silence, as ASP.NET Core does.
* Hub methods (names case-insensitive, argument counts checked like ASP.NET
  Core): ``Subscribe``/``Unsubscribe`` (SubscriptionResult per item, with the
  document's validation order and messages), ``UnsubscribeAll``,
  ``AvailableSubscriptions``, ``ActiveSubscriptions``.  Subscriptions live
  and die with their connection.
* ``MessageReceived`` with ``{subscription, data}`` for each subscribed
  entity's events: ``publish``, the scenarios (:mod:`.scenarios`), ``blast``.
  ``data`` is camelCase by default (what ASP.NET Core's JSON protocol sends);
  ``wire_case="pascal"`` sends the document's PascalCase instead.

Fault injection (methods here and ``POST /_sim/<action>`` for the CLI):
``restart`` (a hub restart: every connection closed, every token invalid,
so clients need a fresh token), ``drop`` (close connections only),
``deny`` (refuse subscriptions to an entity: ``Unauthorized``),
``publish_raw`` (any text, malformed or not).

Protocol keepalive: with ``ws_ping_every`` set, the simulator's port is a
relay (:mod:`.wsping`) that sends every WebSocket client an RFC 6455 ping
that often and closes a connection whose pong (the same payload) has not come
within ``ws_pong_within`` seconds, as an enforcing load balancer or proxy
does.  ``ping_stats`` counts pings, pongs and cut connections.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.abc
import jwt
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ccbus import serve_asgi, simulator_control_routes

from .protocol import (
    EVENT_ALIASES,
    EVENTS,
    INVALID_ENTITY,
    INVALID_EVENT,
    MESSAGE_RECEIVED,
    UNAUTHORIZED,
    canonical_event_name,
    example_payload,
    is_guid,
)
from .scenarios import DEMO_ORG, Organization, Step, contact_center
from .wsping import PingingRelay, PingStats

__all__ = ["DEFAULT_SECRET", "DEFAULT_USERNAME", "HubClient", "RteSimulator"]

DEFAULT_USERNAME = "ccbus-demo"
DEFAULT_SECRET = "simulator-secret"
HUB_PATH = "/rte"
RS = "\x1e"
SCENARIOS: dict[str, Callable[[], list[Step]]] = {"contact-center": contact_center}

_ID_FIELDS = {"User": "UserId", "Queue": "QueueId", "CallList": "CallListId"}
_NAME_FIELDS = {"User": "UserName", "Queue": "QueueName"}


def _dotnet_now() -> str:
    """Now, as .NET writes it: seven fraction digits and a Z."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}0Z"


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def _camel(doc: dict[str, Any]) -> dict[str, Any]:
    return {k[:1].lower() + k[1:]: v for k, v in doc.items()}


def _frame(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":")) + RS


@dataclass(eq=False, slots=True)
class HubClient:
    """One client connection, as the hub sees it."""

    websocket: WebSocket
    connection_id: str
    user: str
    #: (entity id lower-cased, event name) -> the document's Subscription object
    subscriptions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    last_received: float = field(default_factory=time.monotonic)
    close_requested: anyio.Event = field(default_factory=anyio.Event)
    close_error: str | None = None
    close_code: int = 1000
    gone: bool = False
    #: what the client asked for in the handshake, and its user agent
    user_agent: str = ""

    def request_close(self, error: str | None, code: int = 1000) -> None:
        if not self.close_requested.is_set():
            self.close_error, self.close_code = error, code
            self.close_requested.set()

    async def send(self, text: str) -> bool:
        if self.gone:
            return False
        async with self.lock:
            try:
                await self.websocket.send_text(text)
            except Exception:  # the client went away mid-send
                self.gone = True
                return False
        return True


@dataclass(slots=True)
class SimStats:
    token_requests: int = 0
    tokens_issued: int = 0
    token_refusals: int = 0
    negotiations: int = 0
    connections: int = 0
    hub_refusals: int = 0
    handshakes: int = 0
    invocations: Counter[str] = field(default_factory=Counter)
    subscribe_results: Counter[str] = field(default_factory=Counter)
    pings_received: int = 0
    published: int = 0
    delivered: int = 0
    restarts: int = 0
    client_timeouts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            name: dict(value) if isinstance(value := getattr(self, name), Counter) else value
            for name in self.__slots__
        }


class RteSimulator:
    """The REST token call and the RTE hub of one organisation, on loopback."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = DEFAULT_USERNAME,
        secret: str = DEFAULT_SECRET,
        organization: Organization = DEMO_ORG,
        token_ttl: float = 3600.0,
        keepalive: float = 15.0,
        client_timeout: float = 30.0,
        wire_case: str = "camel",
        ws_ping_every: float | None = None,
        ws_pong_within: float = 10.0,
    ) -> None:
        if wire_case not in ("camel", "pascal"):
            raise ValueError("wire_case is 'camel' or 'pascal'")
        if ws_ping_every is not None and (ws_ping_every <= 0 or ws_pong_within <= 0):
            raise ValueError("ws_ping_every and ws_pong_within must be positive")
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.org = organization
        self.token_ttl = token_ttl
        self.keepalive = keepalive
        self.client_timeout = client_timeout
        self.wire_case = wire_case
        self.ws_ping_every = ws_ping_every
        self.ws_pong_within = ws_pong_within
        self.relay: PingingRelay | None = None
        self.stats = SimStats()
        self.clients: set[HubClient] = set()
        #: entity ids (lower-cased) the API user may not subscribe to
        self.denied: set[str] = set()
        self._key = secrets.token_bytes(32)
        self._pending: dict[str, tuple[str, float]] = {}  # negotiated id -> (user, when)
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        self._changed = anyio.Event()
        self._tg: TaskGroup | None = None
        self._server: TaskGroup | None = None
        self.app = self._build_app()

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> RteSimulator:
        sock = _listening_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        public: socket.socket | None = None
        if self.ws_ping_every is not None:  # the relay takes the port; the hub hides behind it
            public, sock = sock, _listening_socket("127.0.0.1", 0)
            self.relay = PingingRelay(
                ("127.0.0.1", sock.getsockname()[1]),
                every=self.ws_ping_every,
                pong_within=self.ws_pong_within,
                on_change=self._touch,
            )
        self._server = anyio.create_task_group()
        await self._server.__aenter__()
        await self._server.start(self._serve_http, sock)
        self._tg = await self._server.start(self._background)
        if self.relay is not None and public is not None:
            listener = await anyio.abc.SocketListener.from_socket(public)
            await self._tg.start(self.relay.serve, listener)
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
        with anyio.CancelScope(shield=True):
            for client in list(self.clients):
                client.request_close(None)
            with anyio.move_on_after(3):
                await self.wait_for(lambda: not self.clients, within=3)
            self._stop.set()
            await self._stopped.wait()
        await self._server.__aexit__(None, None, None)

    @property
    def ping_stats(self) -> PingStats | None:
        """The protocol keepalive's counters, when ``ws_ping_every`` is set."""
        return self.relay.stats if self.relay is not None else None

    @property
    def url(self) -> str:
        """The REST API base URL (and the control API under ``/_sim``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def hub_url(self) -> str:
        return f"{self.url}{HUB_PATH}".replace("http://", "ws://", 1)

    def source_options(self) -> dict[str, Any]:
        """The options an ``enreach`` source needs to use this simulator."""
        return {"api_url": self.url, "username": self.username, "secret": self.secret}

    # -- waiting (tests, demo, benchmark) -----------------------------------------------

    def _touch(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checked on every change; TimeoutError after."""
        with anyio.fail_after(within):
            while not predicate():
                with anyio.move_on_after(0.05):
                    await self._changed.wait()

    def subscription_count(self) -> int:
        return sum(len(c.subscriptions) for c in self.clients if not c.gone)

    async def wait_subscribed(self, count: int = 1, within: float = 10.0) -> None:
        """Wait until the connected clients hold ``count`` subscriptions in all."""
        await self.wait_for(lambda: self.subscription_count() >= count, within)

    # -- tokens -------------------------------------------------------------------------

    def issue_token(self, user: str | None = None, ttl: float | None = None) -> str:
        now = int(time.time())
        claims = {
            "sub": user or self.org.api_user,
            "org": self.org.id,
            "aud": "rte",
            "iat": now,
            "exp": now + int(ttl if ttl is not None else self.token_ttl),
        }
        self.stats.tokens_issued += 1
        return jwt.encode(claims, self._key, algorithm="HS256")

    def _user_of(self, token: str | None) -> str | None:
        """The token's user if it is valid now (signature, audience, expiry), else None."""
        if not token:
            return None
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"], audience="rte")
        except jwt.PyJWTError:
            return None
        sub = claims.get("sub")
        return sub if isinstance(sub, str) else None

    @staticmethod
    def _bearer(conn: HTTPConnection) -> str | None:
        header = conn.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return conn.query_params.get("access_token")

    # -- fault injection ----------------------------------------------------------------

    async def restart(self) -> int:
        """A hub restart: every connection closed, every token issued so far invalid."""
        self._key = secrets.token_bytes(32)
        self._pending.clear()
        self.stats.restarts += 1
        return self.drop_connections("Server restarting", code=1012)

    def drop_connections(self, error: str | None = "Connection dropped", code: int = 1011) -> int:
        """Close every client connection (with a SignalR close message saying ``error``)."""
        clients = [c for c in self.clients if not c.gone]
        for client in clients:
            client.request_close(error, code)
        return len(clients)

    def deny(self, entity_id: str) -> None:
        """Refuse subscriptions to ``entity_id`` from now on (``Unauthorized``)."""
        self.denied.add(entity_id.lower())

    # -- events ---------------------------------------------------------------------------

    def event_data(
        self, event: str, entity_id: str, fields: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """An event's data: the document's example, filled in for this entity, as sent."""
        name = canonical_event_name(event) or event
        entity_type = self.org.entity_type(entity_id) or (
            EVENTS[name].entity_type if name in EVENTS else "User"
        )
        data = example_payload(name) if name in EVENTS else {"EventType": name}
        data.update(
            {
                "RootEntityType": "Organization",
                "RootEntityId": self.org.id,
                "EventType": name,
                "EntityType": entity_type,
                "EntityId": entity_id,
                "OrganizationId": self.org.id,
                "Id": str(uuid.uuid4()),
                "Timestamp": _dotnet_now(),
            }
        )
        id_field = _ID_FIELDS.get(entity_type)
        if id_field and id_field in data:
            data[id_field] = entity_id
        name_field = _NAME_FIELDS.get(entity_type)
        entity_name = self.org.name(entity_id)
        if name_field and entity_name and name_field in data:
            data[name_field] = entity_name
        if fields:
            data.update(fields)
        return _camel(data) if self.wire_case == "camel" else data

    def _receivers(self, event: str, entity_id: str) -> list[tuple[HubClient, dict[str, Any]]]:
        key = (entity_id.lower(), event)
        return [
            (c, c.subscriptions[key]) for c in self.clients if not c.gone and key in c.subscriptions
        ]

    async def publish(
        self, event: str, entity_id: str, fields: dict[str, Any] | None = None
    ) -> int:
        """Send one event to every connection subscribed to it; how many got it."""
        name = canonical_event_name(event) or event
        data = self.event_data(name, entity_id, fields)
        return await self.publish_data(name, entity_id, data)

    async def publish_data(self, event: str, entity_id: str, data: dict[str, Any]) -> int:
        """Send ``data`` as it is (any shape) to every connection subscribed to the event."""
        self.stats.published += 1
        delivered = 0
        for client, subscription in self._receivers(event, entity_id):
            text = _frame(
                {
                    "type": 1,
                    "target": MESSAGE_RECEIVED,
                    "arguments": [{"subscription": subscription, "data": data}],
                }
            )
            if await client.send(text):
                delivered += 1
        self.stats.delivered += delivered
        return delivered

    async def publish_raw(self, text: str) -> int:
        """Send ``text`` as it is (malformed or not) to every connected client."""
        sent = 0
        for client in list(self.clients):
            if await client.send(text):
                sent += 1
        return sent

    async def play(self, steps: Iterable[Step], *, speed: float = 1.0) -> int:
        """Publish a scenario's steps with their pauses; how many were delivered."""
        delivered = 0
        for step in steps:
            if step.delay > 0 and speed > 0:
                await anyio.sleep(step.delay / speed)
            delivered += await self.publish(step.event, step.entity, step.fields)
        return delivered

    def play_forever(self, scenario: Callable[[], list[Step]], every: float, speed: float) -> None:
        """In the background: play ``scenario`` whenever someone is subscribed, then pause."""
        assert self._tg is not None

        async def run() -> None:
            while True:
                await self.wait_for(lambda: self.subscription_count() > 0, within=math.inf)
                await self.play(scenario(), speed=speed)
                if every <= 0:
                    return
                await anyio.sleep(every)

        self._tg.start_soon(run)

    async def blast(
        self, count: int, *, event: str = "UserStatus", rate: float | None = None
    ) -> dict[str, Any]:
        """Send ``count`` events flat out (or at ``rate``/s) to every subscribed client.

        Each client gets them for its first subscription to ``event``, with a
        fresh ``Id`` each and ``Talking`` true for one in four.  The texts are
        built before the clock starts, so only sending is timed.  Paced events
        carry ``sentAt`` (wall clock, seconds) for latency measurements.
        """
        plans = []
        for client in list(self.clients):
            found = next(((k, s) for k, s in client.subscriptions.items() if k[1] == event), None)
            if found is None or client.gone:
                continue
            (entity_id, _), subscription = found
            base = self.event_data(event, entity_id)
            plans.append((client, subscription, base))
        camel = self.wire_case == "camel"
        id_key, talking_key = ("id", "talking") if camel else ("Id", "Talking")
        sent = 0
        started_at, started = time.time(), time.perf_counter()
        for client, subscription, base in plans:
            head = json.dumps({"type": 1, "target": MESSAGE_RECEIVED})[:-1]
            texts = []
            for i in range(count if rate is None else 0):
                data = dict(base)
                data[id_key] = str(uuid.uuid4())
                data[talking_key] = i % 4 == 0  # one in four on a call: rules can filter
                texts.append(
                    head
                    + ',"arguments":['
                    + json.dumps({"subscription": subscription, "data": data})
                    + "]}"
                    + RS
                )
            async with client.lock:
                if rate is None:
                    started_at, started = time.time(), time.perf_counter()
                    for text in texts:
                        await client.websocket.send_text(text)
                        sent += 1
                    continue
                for i in range(count):
                    delay = started + i / rate - time.perf_counter()
                    if delay > 0:
                        await anyio.sleep(delay)
                    data = dict(base)
                    data[id_key] = str(uuid.uuid4())
                    data[talking_key] = i % 4 == 0
                    data["sentAt"] = time.time()
                    await client.websocket.send_text(
                        _frame(
                            {
                                "type": 1,
                                "target": MESSAGE_RECEIVED,
                                "arguments": [{"subscription": subscription, "data": data}],
                            }
                        )
                    )
                    sent += 1
        self.stats.published += count
        self.stats.delivered += sent
        return {"sent": sent, "seconds": time.perf_counter() - started, "started_at": started_at}

    # -- HTTP ---------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token/{userid}/rte/", self._token, methods=["GET"]),
                Route("/token/{userid}/rte", self._token, methods=["GET"]),
                Route(HUB_PATH + "/negotiate", self._negotiate, methods=["POST"]),
                WebSocketRoute(HUB_PATH, self._websocket),
                *simulator_control_routes(self._control_actions(), self.status),
            ]
        )

    async def _token(self, request: Request) -> JSONResponse:
        self.stats.token_requests += 1
        header = request.headers.get("authorization", "")
        ok = False
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                ok = secrets.compare_digest(user, self.username) and secrets.compare_digest(
                    password, self.secret
                )
            except (ValueError, UnicodeDecodeError):
                ok = False
        if not ok:
            self.stats.token_refusals += 1
            return JSONResponse(
                {"Message": "Authorization has been denied for this request."}, status_code=401
            )
        userid = request.path_params["userid"]
        if userid.lower() not in ("me", self.org.api_user):
            self.stats.token_refusals += 1
            return JSONResponse({"Message": f"No access to user {userid}"}, status_code=403)
        return JSONResponse(
            {"WssEndpoint": self.hub_url, "Token": self.issue_token(self.org.api_user)}
        )

    async def _negotiate(self, request: Request) -> JSONResponse:
        self.stats.negotiations += 1
        user = self._user_of(self._bearer(request))
        if user is None:
            self.stats.hub_refusals += 1
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        try:
            version = int(request.query_params.get("negotiateVersion", "0"))
        except ValueError:
            version = 0
        connection_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        body: dict[str, Any] = {
            "negotiateVersion": 1 if version >= 1 else 0,
            "connectionId": connection_id,
            "availableTransports": [
                {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}
            ],
        }
        key = connection_id
        if version >= 1:
            key = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
            body["connectionToken"] = key
        self._pending[key] = (user, time.monotonic())
        return JSONResponse(body)

    async def _websocket(self, websocket: WebSocket) -> None:
        user = self._user_of(self._bearer(websocket))
        if user is None:
            self.stats.hub_refusals += 1
            await websocket.send_denial_response(
                JSONResponse({"error": "Unauthorized"}, status_code=401)
            )
            return
        negotiated = websocket.query_params.get("id")
        if negotiated is not None:
            pending = self._pending.pop(negotiated, None)
            if pending is None:
                await websocket.send_denial_response(
                    JSONResponse({"error": "No Connection with that ID"}, status_code=404)
                )
                return
        await websocket.accept()
        self.stats.connections += 1
        client = HubClient(
            websocket,
            negotiated or secrets.token_hex(8),
            user,
            user_agent=websocket.headers.get("user-agent", ""),
        )
        self.clients.add(client)
        self._touch()
        try:
            await self._serve(client)
        except WebSocketDisconnect:
            pass
        finally:
            client.gone = True
            self.clients.discard(client)
            self._touch()

    async def _serve(self, client: HubClient) -> None:
        websocket = client.websocket
        with anyio.move_on_after(self.client_timeout) as waited:
            first = await websocket.receive()
        if waited.cancelled_caught or first["type"] == "websocket.disconnect":
            return
        text = first.get("text") or (first.get("bytes") or b"").decode("utf-8", "replace")
        head, _, rest = text.partition(RS)
        try:
            handshake = json.loads(head)
            protocol = handshake.get("protocol")
        except (ValueError, AttributeError):
            protocol = None
        if protocol != "json":
            await websocket.send_text(
                _frame({"error": f"The protocol '{protocol}' is not supported."})
            )
            await websocket.close(1002)
            return
        await websocket.send_text("{}" + RS)
        self.stats.handshakes += 1
        self._touch()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._receive, client, rest)
            tg.start_soon(self._keepalive, client)
            await client.close_requested.wait()
            tg.cancel_scope.cancel()
        client.gone = True
        try:
            if client.close_error is not None:
                await websocket.send_text(
                    _frame({"type": 7, "error": client.close_error, "allowReconnect": True})
                )
            await websocket.close(client.close_code)
        except Exception:  # already gone
            pass

    async def _keepalive(self, client: HubClient) -> None:
        """Ping every ``keepalive`` seconds; drop a client silent for ``client_timeout``."""
        ping = _frame({"type": 6})
        tick = min(self.keepalive, self.client_timeout / 4, 1.0)
        next_ping = time.monotonic() + self.keepalive
        while True:
            await anyio.sleep(tick)
            now = time.monotonic()
            if now - client.last_received > self.client_timeout:
                self.stats.client_timeouts += 1
                client.request_close(
                    "Server timeout elapsed without receiving a message from the client."
                )
                return
            if now >= next_ping:
                next_ping = now + self.keepalive
                await client.send(ping)

    async def _receive(self, client: HubClient, rest: str) -> None:
        pending = rest
        while True:
            for record in pending.split(RS)[:-1] if pending else []:
                await self._handle(client, record)
            message = await client.websocket.receive()
            if message["type"] == "websocket.disconnect":
                client.gone = True
                client.request_close(None)
                return
            client.last_received = time.monotonic()
            pending = message.get("text") or (message.get("bytes") or b"").decode(
                "utf-8", "replace"
            )

    async def _handle(self, client: HubClient, record: str) -> None:
        try:
            doc = json.loads(record)
        except ValueError:
            client.request_close("Error: invalid JSON hub message", 1003)
            return
        kind = doc.get("type") if isinstance(doc, dict) else None
        if kind == 6:
            self.stats.pings_received += 1
            return
        if kind == 7:
            client.request_close(None)
            return
        if kind != 1:
            return  # stream items, cancellations, acks: nothing the RTE hub uses
        target = str(doc.get("target", ""))
        arguments = doc.get("arguments")
        invocation_id = doc.get("invocationId")
        self.stats.invocations[target] += 1
        try:
            result = self._invoke(client, target, arguments if isinstance(arguments, list) else [])
            answer: dict[str, Any] = {"type": 3, "invocationId": invocation_id, "result": result}
        except HubMethodError as err:
            answer = {"type": 3, "invocationId": invocation_id, "error": str(err)}
        self._touch()
        if invocation_id is not None:
            await client.send(_frame(answer))

    # -- hub methods ----------------------------------------------------------------------

    def _invoke(self, client: HubClient, target: str, arguments: list[Any]) -> Any:
        methods: dict[str, tuple[int, Callable[..., Any]]] = {
            "subscribe": (1, lambda items: self._subscribe(client, items)),
            "unsubscribe": (1, lambda items: self._unsubscribe(client, items)),
            "unsubscribeall": (0, lambda: self._unsubscribe_all(client)),
            "availablesubscriptions": (0, self._available),
            "activesubscriptions": (0, lambda: list(client.subscriptions.values())),
        }
        found = methods.get(target.lower())
        if found is None:
            raise HubMethodError(
                f"Failed to invoke '{target}' due to an error on the server. "
                "HubException: Method does not exist."
            )
        count, method = found
        if len(arguments) != count:
            raise HubMethodError(
                f"Failed to invoke '{target}' due to an error on the server. "
                f"InvalidDataException: Invocation provides {len(arguments)} argument(s) "
                f"but target expects {count}."
            )
        if count and not isinstance(arguments[0], list):
            raise HubMethodError(
                f"Failed to invoke '{target}' due to an error on the server. "
                "InvalidDataException: Error binding arguments. Make sure that the types of "
                "the provided values match the types of the hub method being invoked."
            )
        return method(*arguments)

    def _available(self) -> list[str]:
        return sorted(name for name in EVENTS if name not in EVENT_ALIASES)

    def _validate(self, item: Any) -> tuple[str | None, str, str, str | None]:
        """(message or None, entity id, event name, the event's document spelling)."""
        if not isinstance(item, dict):
            return INVALID_ENTITY, "", "", None
        lowered = {str(k).lower(): v for k, v in item.items()}
        entity = lowered.get("entityid")
        raw_event = lowered.get("eventname")
        event_text = str(raw_event) if raw_event is not None else ""
        if not is_guid(entity):
            return INVALID_ENTITY, str(entity or ""), event_text, None
        entity_id = str(entity).strip("{}()").lower()
        event = canonical_event_name(event_text) if event_text else None
        if event is None:
            return INVALID_EVENT, entity_id, event_text, None
        entity_type = self.org.entity_type(entity_id)
        if entity_type is None or entity_id in self.denied:
            return UNAUTHORIZED, entity_id, event_text, event
        if EVENTS[event].entity_type != entity_type:
            return INVALID_EVENT, entity_id, event_text, event
        return None, entity_id, event_text, event

    def _subscribe(self, client: HubClient, items: list[Any]) -> list[dict[str, Any]]:
        results = []
        for item in items:
            message, entity_id, event_text, event = self._validate(item)
            if message is None and event is not None:
                key = (entity_id, event)
                client.subscriptions.setdefault(key, self._subscription(entity_id, event))
            self.stats.subscribe_results[message or "subscribed"] += 1
            results.append(
                {
                    "subscribed": message is None,
                    "message": message,
                    "entityId": entity_id,
                    "eventName": event_text.lower(),
                }
            )
        return results

    def _unsubscribe(self, client: HubClient, items: list[Any]) -> list[dict[str, Any]]:
        results = []
        for item in items:
            message, entity_id, event_text, event = self._validate(item)
            if event is not None:
                client.subscriptions.pop((entity_id, event), None)
            results.append(
                {
                    "subscribed": False,
                    "message": message,
                    "entityId": entity_id,
                    "eventName": event_text.lower(),
                }
            )
        return results

    def _unsubscribe_all(self, client: HubClient) -> bool:
        client.subscriptions.clear()
        return True

    def _subscription(self, entity_id: str, event: str) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "allRootEntities": False,
            "rootEntityId": self.org.id,
            "rootEntityType": "Organization",
            "organizationId": self.org.id,
            "eventType": event,
            "entityType": self.org.entity_type(entity_id),
            "entityId": entity_id,
            "allEntities": False,
        }

    # -- control API (``ccbus simulate enreach inject ...``) -------------------------------

    def status(self) -> dict[str, Any]:
        """Counters, WebSocket pings and connected clients: ``GET /_sim/status``."""
        pings = self.ping_stats
        return {
            "stats": self.stats.as_dict(),
            "websocket_pings": asdict(pings) if pings is not None else None,
            "clients": [
                {
                    "connectionId": c.connection_id,
                    "userAgent": c.user_agent,
                    "subscriptions": sorted(f"{e}/{n}" for e, n in c.subscriptions),
                }
                for c in self.clients
                if not c.gone
            ],
        }

    def _control_actions(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]:
        """``POST /_sim/<action>``: what ``ccbus simulate enreach inject`` calls."""
        async def restart(p: dict[str, Any]) -> dict[str, Any]:
            return {"closed": await self.restart()}

        async def drop(p: dict[str, Any]) -> dict[str, Any]:
            return {"closed": self.drop_connections()}

        async def deny(p: dict[str, Any]) -> dict[str, Any]:
            self.deny(str(p["entity"]))
            return {"denied": sorted(self.denied)}

        async def publish(p: dict[str, Any]) -> dict[str, Any]:
            fields = p.get("fields") or {}
            if not isinstance(fields, dict):
                raise TypeError("'fields' must be an object")
            delivered = await self.publish(str(p["event"]), str(p["entity"]), fields)
            return {"delivered": delivered}

        async def scenario(p: dict[str, Any]) -> dict[str, Any]:
            name = str(p.get("name", "contact-center"))
            if name not in SCENARIOS:
                raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
            return {"delivered": await self.play(SCENARIOS[name](), speed=float(p.get("speed", 1)))}

        async def blast(p: dict[str, Any]) -> dict[str, Any]:
            rate = p.get("rate")
            return await self.blast(
                int(p.get("count", 1000)),
                event=str(p.get("event", "UserStatus")),
                rate=float(rate) if rate else None,
            )

        return {
            "restart": restart,
            "drop": drop,
            "deny": deny,
            "publish": publish,
            "scenario": scenario,
            "blast": blast,
        }


class HubMethodError(Exception):
    """A hub method failed: the completion carries this message as its ``error``."""

