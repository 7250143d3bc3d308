"""Shared HTTP clients for actions: one connection pool per CA bundle, closed by the bus.

Actions reach it as ``ctx.http.get(ca_bundle=None)``. TLS verification is
always on: a private CA is given as a bundle path, never switched off.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

__all__ = ["HttpClients"]


class HttpClients:
    def __init__(self) -> None:
        self._clients: dict[str | None, httpx.AsyncClient] = {}

    def get(self, ca_bundle: str | None = None) -> httpx.AsyncClient:
        """The client verifying against ``ca_bundle`` (a PEM file), or the system CAs."""
        client = self._clients.get(ca_bundle)
        if client is None:
            verify: ssl.SSLContext | bool = True
            if ca_bundle is not None:
                if not Path(ca_bundle).is_file():
                    raise FileNotFoundError(f"CA bundle {ca_bundle} does not exist")
                verify = ssl.create_default_context(cafile=ca_bundle)
            client = httpx.AsyncClient(
                verify=verify,
                trust_env=False,  # no surprise proxies from the environment
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            )
            self._clients[ca_bundle] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
