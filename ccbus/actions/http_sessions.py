"""Shared HTTP sessions for actions: one connection pool per CA bundle, closed by the bus.

Actions reach it as ``ctx.http.get(ca_bundle=None)``, an
:class:`aiohttp.ClientSession`.  TLS verification is always on: a private CA
is given as a bundle path, never switched off.

Why aiohttp: delivery throughput is bounded by the HTTP client's CPU cost.
Measured on the reference machine against a trivial keep-alive receiver with
8 concurrent requests, httpx managed about 1,000 requests/s (about 1 ms of
CPU each), aiohttp about 9,000 requests/s; the project needs at least 1,000
durable webhook deliveries/s (``bench/delivery_bench.py``), which httpx
alone could not leave room for.

Sessions are created lazily, inside the running event loop: an aiohttp
session (and its connector) belongs to the loop it was made in, while this
object is built before any loop runs (``Bus.__init__``).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import aiohttp

__all__ = ["HttpClients", "RequestTrace"]

#: Connections open at once per session (per CA bundle), across all hosts.
MAX_CONNECTIONS = 100


@dataclass(slots=True)
class RequestTrace:
    """What the session did for one request: pass one as ``trace_request_ctx=``.

    ``reused_connection`` tells a failure on a pooled keep-alive connection
    (which the server may have closed just as the request went out) from one
    on a new connection.
    """

    reused_connection: bool = False


async def _on_reuse(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceConnectionReuseconnParams,
) -> None:
    trace = context.trace_request_ctx
    if isinstance(trace, RequestTrace):
        trace.reused_connection = True


def _tracing() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_connection_reuseconn.append(_on_reuse)
    return config


class HttpClients:
    def __init__(self) -> None:
        self._sessions: dict[str | None, aiohttp.ClientSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self, ca_bundle: str | None = None) -> aiohttp.ClientSession:
        """The session verifying against ``ca_bundle`` (a PEM file), or the system CAs.

        Must be called from a coroutine (the session is bound to the running
        loop).  Raises :class:`FileNotFoundError` for a bundle that does not
        exist and :class:`ssl.SSLError` for one that cannot be loaded.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Sessions made in another loop (one that has ended: a second run of
            # a bus, a test) cannot serve this one, nor be closed from it.
            self._sessions = {}
            self._loop = loop
        session = self._sessions.get(ca_bundle)
        if session is None or session.closed:
            if ca_bundle is None:
                context = ssl.create_default_context()
            else:
                if not Path(ca_bundle).is_file():
                    raise FileNotFoundError(f"CA bundle {ca_bundle} does not exist")
                context = ssl.create_default_context(cafile=ca_bundle)
            session = aiohttp.ClientSession(
                # keep-alive is on (force_close=False): connections are reused per host
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ssl=context),
                # cookies one target sets must not travel with the next call
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # no surprise proxies (or .netrc credentials) from the environment
                trace_configs=[_tracing()],  # fills a request's RequestTrace, if it passes one
            )
            self._sessions[ca_bundle] = session
        return session

    async def aclose(self) -> None:
        """Close every session (their pooled connections); :meth:`get` makes new ones after."""
        sessions, self._sessions = self._sessions, {}
        if self._loop is not asyncio.get_running_loop():
            return  # made in another loop, which closes them (or has ended)
        for session in sessions.values():
            await session.close()
