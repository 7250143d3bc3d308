"""The ``enreach`` source: token, connect, subscribe, receive, keep alive; and again, forever.

One connected period::

    GET  {api_url}/token/{user_id}/rte/          -> WssEndpoint, Token (a fresh JWT)
    POST {WssEndpoint}/negotiate                  (unless skip_negotiation)
    WebSocket {WssEndpoint}?id=...  + SignalR JSON handshake
    Subscribe [every wanted (EntityId, EventName)]   in batches; each result checked
    <- MessageReceived ...        -> ping every ping_every
    (nothing from the hub for server_timeout: the connection is dead)

The hub keeps no subscriptions across connections, so every period restores
all of them: the config's and those rules added at run time with
``enreach.subscribe`` (minus those removed with ``enreach.unsubscribe``).
Any failure ends the period; the next one starts after a delay from
:class:`ccbus.sources.backoff.Backoff` (the bus's policy) with a fresh token.  A 401
or 403 (token call, negotiate or WebSocket upgrade) is logged as an error
naming the user id, and retried the same way: a revoked API key may be
restored, and the service must not die for it.

The running source answers on ccbus's local HTTP listener, for
``ccbus enreach available|active``::

    GET /enreach/<source>/available   the hub's AvailableSubscriptions
    GET /enreach/<source>/active      the hub's ActiveSubscriptions
    GET /enreach/<source>/status      connection, subscriptions and counters
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup
from starlette.requests import Request
from starlette.responses import JSONResponse

from ccbus import Backoff, SourceContext

from .auth import fetch_token
from .errors import HubError, Transient, Unauthorized
from .hub import HubSession
from .intake import Intake
from .options import EnreachOptions
from .protocol import SubscriptionResult

__all__ = ["RUNNING", "EnreachSource", "running_source"]

#: Sources running in this process, by instance name: how actions find theirs.
RUNNING: dict[str, EnreachSource] = {}

Pair = tuple[str, str]

RETRYABLE = (Transient, HubError, OSError, httpx.HTTPError)


def running_source(name: str | None) -> EnreachSource:
    """The running source called ``name``, or the only one; LookupError says why not."""
    if name is not None:
        found = RUNNING.get(name)
        if found is None:
            known = ", ".join(sorted(RUNNING)) or "none"
            raise LookupError(f"no running enreach source {name!r} (running: {known})")
        return found
    if len(RUNNING) == 1:
        return next(iter(RUNNING.values()))
    if not RUNNING:
        raise LookupError("no enreach source is running")
    raise LookupError(
        f"several enreach sources run ({', '.join(sorted(RUNNING))}): name one with 'source:'"
    )


class EnreachSource:
    """One configured ``enreach`` source instance."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.options: EnreachOptions = ctx.options
        self.log = ctx.log
        self.intake = Intake(
            ctx, dedup_size=self.options.dedup_size, drop_expired=self.options.drop_expired
        )
        self.backoff = Backoff(initial=self.options.backoff_initial, cap=self.options.backoff_cap)
        #: what should be subscribed on every connection, in order, and where it came from
        self.wanted: dict[Pair, str] = dict.fromkeys(self.options.subscriptions.pairs(), "config")
        #: what the hub confirmed on the current connection
        self.active: set[Pair] = set()
        self.session: HubSession | None = None
        self.connected = anyio.Event()
        #: counters: connections made, failures by kind, refused subscriptions by message
        self.connections = 0
        self.failures: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.pings = 0
        #: seconds from losing a connection to having every subscription back, per recovery
        self.recoveries: list[float] = []
        self._lost_at: float | None = None
        self._failure: BaseException | None = None
        self._tg: TaskGroup | None = None
        self._malformed: deque[tuple[str, str]] = deque()
        base = f"/enreach/{ctx.name}"
        ctx.add_route(f"{base}/available", self._http_available, ["GET"])
        ctx.add_route(f"{base}/active", self._http_active, ["GET"])
        ctx.add_route(f"{base}/status", self._http_status, ["GET"])

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        RUNNING[self.ctx.name] = self
        try:
            async with httpx.AsyncClient(
                timeout=self.options.connect_timeout,
                verify=self.options.verify_tls,
                headers={"User-Agent": "ccbus-enreach"},
            ) as http:
                while True:
                    try:
                        await self._period(http)
                    except Unauthorized as err:
                        await self._back_off("unauthorized", err, error=True)
                    except RETRYABLE as err:
                        await self._back_off(type(err).__name__, err)
        finally:
            if RUNNING.get(self.ctx.name) is self:
                del RUNNING[self.ctx.name]

    async def _back_off(self, kind: str, err: BaseException, *, error: bool = False) -> None:
        self.failures[kind] += 1
        self.ctx.set_state("reconnecting")
        delay = self.backoff.next_delay()
        if error:
            self.log.error(
                "enreach %s: unauthorized for user id %r: %s; retrying with a fresh token in %.1fs",
                self.ctx.name,
                self.options.user_id,
                err,
                delay,
            )
        else:
            self.log.warning(
                "enreach %s: %s; reconnecting with a fresh token in %.1fs",
                self.ctx.name,
                _describe(err),
                delay,
            )
        await anyio.sleep(delay)

    async def _period(self, http: httpx.AsyncClient) -> None:
        """Token, connection, subscriptions; then receive until something fails."""
        self.ctx.set_state("connecting")
        options = self.options
        with anyio.fail_after(options.connect_timeout):
            token = await fetch_token(
                http, options.api_url, options.user_id, options.username, options.secret
            )
        url = options.hub_url or token.endpoint
        session = HubSession(
            url,
            token.token,
            max_pending=options.max_pending,
            skip_negotiation=options.skip_negotiation,
            verify_tls=options.verify_tls,
            on_malformed=lambda record, why: self._malformed.append((record, why)),
        )
        self._failure = None
        try:
            try:
                await session.start(options.connect_timeout)
            except Unauthorized as err:
                raise Unauthorized(f"the hub at {url} refused the token: {err}") from None
            self.connections += 1
            self.backoff.started()
            self.session = session
            self.active = set()
            self.log.info("enreach %s: connected to %s", self.ctx.name, url)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._guard, self._pump, session)
                tg.start_soon(self._guard, self._keepalive, session)
                tg.start_soon(self._guard, self._restore, session)
                await session.closed.wait()
                if self._failure is None:
                    self._failure = Transient("the hub closed the connection")
                tg.cancel_scope.cancel()
            # what arrived before the end is still routed (or refused)
            await self._refuse_malformed()
            await self.intake.batch(session.handoff.take_nowait())
        finally:
            self._tg = None
            if self.session is session:
                self.session = None
                self.connected = anyio.Event()
                self._lost_at = time.monotonic()
            await session.stop()
        raise self._failure or Transient("the connection ended")

    async def _guard(self, func: Any, *args: Any) -> None:
        """Run a task of the period; its failure ends the period (no exception groups)."""
        try:
            await func(*args)
        except Exception as err:
            if self._failure is None:
                self._failure = err
            if self._tg is not None:
                self._tg.cancel_scope.cancel()

    async def _pump(self, session: HubSession) -> None:
        while True:
            batch = await session.handoff.get_batch()
            if self._malformed:
                await self._refuse_malformed()
            if not batch:
                return
            # a batch taken is routed whole, even when the connection ends meanwhile
            with anyio.CancelScope(shield=True):
                await self.intake.batch(batch)

    async def _refuse_malformed(self) -> None:
        """Refuse (count, log, dead-letter) the frames the receive thread could not read."""
        with anyio.CancelScope(shield=True):  # a frame taken is refused, even when cancelled
            while self._malformed:
                record, why = self._malformed.popleft()
                await self.intake.malformed_frame(record, why)

    async def _keepalive(self, session: HubSession) -> None:
        """Ping the hub; notice a hub that went silent; refuse the frames it could not read."""
        options = self.options
        tick = min(options.ping_every, options.server_timeout / 4, 1.0)
        last_ping = time.monotonic()
        while True:
            await anyio.sleep(tick)
            if self._malformed:
                await self._refuse_malformed()
            silent = session.silent_for()
            if silent > options.server_timeout:
                raise Transient(
                    f"nothing from the hub for {silent:.1f}s (server_timeout "
                    f"{options.server_timeout:g}s): the connection is dead"
                )
            if time.monotonic() - last_ping >= options.ping_every:
                await session.ping()
                self.pings += 1
                last_ping = time.monotonic()

    async def _restore(self, session: HubSession) -> None:
        """Subscribe everything wanted (the hub forgot it all), then say how it went."""
        pairs = list(self.wanted)
        results = await self._subscribe(session, pairs) if pairs else []
        confirmed = sum(1 for r in results if r.subscribed)
        recovered = ""
        if self._lost_at is not None:
            seconds = time.monotonic() - self._lost_at
            self.recoveries.append(seconds)
            self._lost_at = None
            recovered = f"; recovered {seconds:.2f}s after the connection was lost"
        self.log.info(
            "enreach %s: %d of %d subscription(s) active%s",
            self.ctx.name,
            confirmed,
            len(pairs),
            recovered,
        )
        self.ctx.set_state("connected")
        self.connected.set()

    async def _subscribe(self, session: HubSession, pairs: list[Pair]) -> list[SubscriptionResult]:
        """Call Subscribe in batches; record and report every result."""
        results: list[SubscriptionResult] = []
        size = self.options.subscribe_batch
        for start in range(0, len(pairs), size):
            chunk = pairs[start : start + size]
            answer = await session.invoke(
                "Subscribe", [_entity_subscriptions(chunk)], self.options.invoke_timeout
            )
            results.extend(self._check_results(chunk, answer, "Subscribe"))
        return results

    def _check_results(
        self, chunk: list[Pair], answer: Any, method: str
    ) -> list[SubscriptionResult]:
        items = answer if isinstance(answer, list) else []
        if len(items) != len(chunk):
            self.log.warning(
                "enreach %s: %s of %d item(s) answered %.200r, not %d SubscriptionResult(s)",
                self.ctx.name,
                method,
                len(chunk),
                answer,
                len(chunk),
            )
        results = []
        for index, pair in enumerate(chunk):
            parsed = SubscriptionResult.parse(items[index]) if index < len(items) else None
            if parsed is None:
                parsed = SubscriptionResult(False, "no SubscriptionResult", *pair)
            results.append(parsed)
            if method != "Subscribe":
                continue
            if parsed.subscribed:
                self.active.add(pair)
                continue
            message = parsed.message or "refused without a message"
            self.refused[message] += 1
            self.log.warning(
                "enreach %s: the hub refused to subscribe %s to %s: %s [%d refused so far]",
                self.ctx.name,
                pair[0],
                pair[1],
                message,
                sum(self.refused.values()),
            )
            if self.wanted.get(pair) == "runtime":
                del self.wanted[pair]  # a rule's mistake is not retried on every reconnect
        return results

    # -- run-time subscriptions (the enreach.* actions) -------------------------------------

    async def subscribe(self, pairs: Iterable[Pair]) -> list[SubscriptionResult]:
        """Add subscriptions now and on every later connection; [] when not connected."""
        fresh = [p for p in dict.fromkeys(pairs)]
        for pair in fresh:
            self.wanted.setdefault(pair, "runtime")
        session = self.session
        if session is None:
            return []
        return await self._subscribe(session, fresh)

    async def unsubscribe(self, pairs: Iterable[Pair]) -> Any:
        """Remove subscriptions now and from later connections."""
        chosen = list(dict.fromkeys(pairs))
        for pair in chosen:
            self.wanted.pop(pair, None)
            self.active.discard(pair)
        session = self.session
        if session is None:
            return None
        return await session.invoke(
            "Unsubscribe", [_entity_subscriptions(chosen)], self.options.invoke_timeout
        )

    async def unsubscribe_all(self) -> Any:
        """Remove every subscription, the config's included, until ccbus restarts."""
        self.wanted.clear()
        self.active.clear()
        session = self.session
        if session is None:
            return None
        return await session.invoke("UnsubscribeAll", [], self.options.invoke_timeout)

    # -- HTTP (ccbus enreach available|active) ---------------------------------------------

    async def ask_hub(self, method: str) -> Any:
        session = self.session
        if session is None:
            raise Transient(f"not connected to the hub (state: {self._state()})")
        return await session.invoke(method, [], self.options.invoke_timeout)

    async def _http_hub(self, method: str, key: str) -> JSONResponse:
        try:
            result = await self.ask_hub(method)
        except (Transient, HubError) as err:
            return JSONResponse({"source": self.ctx.name, "error": str(err)}, status_code=503)
        return JSONResponse({"source": self.ctx.name, key: result})

    async def _http_available(self, request: Request) -> JSONResponse:
        return await self._http_hub("AvailableSubscriptions", "available")

    async def _http_active(self, request: Request) -> JSONResponse:
        return await self._http_hub("ActiveSubscriptions", "active")

    async def _http_status(self, request: Request) -> JSONResponse:
        return JSONResponse(self.status())

    def _state(self) -> str:
        return "connected" if self.session is not None else "disconnected"

    def status(self) -> dict[str, Any]:
        """Connection, subscriptions and counters, as ``/enreach/<source>/status`` shows them."""
        return {
            "source": self.ctx.name,
            "state": self._state(),
            "connections": self.connections,
            "wanted": [
                {"entityId": e, "eventName": n, "from": o} for (e, n), o in self.wanted.items()
            ],
            "active": sorted(f"{e}/{n}" for e, n in self.active),
            "refused": dict(self.refused),
            "failures": dict(self.failures),
            "messages": self.intake.messages,
            "emitted": self.intake.emitted,
            "dropped": {**self.intake.dropped, **self.ctx.refusals.counts},
            "recoveries": [round(s, 3) for s in self.recoveries],
            "backpressure_waits": self.session.handoff.waits if self.session else 0,
        }


def _entity_subscriptions(pairs: Iterable[Pair]) -> list[dict[str, str]]:
    """The document's EntitySubscription objects."""
    return [{"EntityId": entity, "EventName": event} for entity, event in pairs]


def _describe(err: BaseException) -> str:
    text = str(err)
    if isinstance(err, Transient | HubError):
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
