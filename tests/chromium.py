"""Debian's headless Chromium, driven over its own DevTools protocol (no npm, no driver).

::

    async with Chromium(url) as page:
        await page.wait_for("document.querySelectorAll('tr.event').length >= 3")
        rows = await page.evaluate("[...document.querySelectorAll('tr.event')].length")
        await page.screenshot(path)

Chromium is started with the flags these machines need (no sandbox as
root, no GPU, no background traffic, a fresh profile); the page is the one
opened on the command line, found through ``/json/list``; commands go over
its WebSocket with aiohttp (a core dependency).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import anyio
from support import free_port

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,900", "--hide-scrollbars"]


class Chromium:
    def __init__(self, url: str) -> None:
        binary = shutil.which("chromium")
        assert binary, "chromium is needed (Debian package chromium; .ci/run installs it)"
        self.binary = binary
        self.url = url
        self.profile = tempfile.TemporaryDirectory(prefix="ccbus-chromium-")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def __aenter__(self) -> Chromium:
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - a browser, started once per test
            [self.binary, *FLAGS, f"--user-data-dir={self.profile.name}",
             f"--remote-debugging-port={self.port}", self.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._session = aiohttp.ClientSession()
        target = None
        with anyio.fail_after(60):
            while target is None:
                try:
                    async with self._session.get(
                            f"http://127.0.0.1:{self.port}/json/list") as answer:
                        pages = [t for t in await answer.json() if t["type"] == "page"]
                        target = pages[0] if pages else None
                except aiohttp.ClientError:
                    pass
                if target is None:
                    await anyio.sleep(0.2)
        self._ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None
                        ) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # Chromium's helper processes may still write to the profile for a moment after
        # the browser exits ("Directory not empty: 'Default'" was seen once in a full run)
        for _ in range(50):
            try:
                self.profile.cleanup()
                break
            except OSError:
                await anyio.sleep(0.1)
        else:
            self.profile.cleanup()  # still failing after 5 s: let the test say why

    async def send(self, method: str, **params: Any) -> Any:
        assert self._ws is not None
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        with anyio.fail_after(60):
            async for message in self._ws:
                doc = json.loads(message.data)
                if doc.get("id") == ident:
                    if "error" in doc:
                        raise RuntimeError(f"{method}: {doc['error']}")
                    return doc["result"]
        raise RuntimeError("DevTools connection closed")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        with anyio.fail_after(timeout):
            # the page may still be loading: an error counts as "not yet"
            check = f"(() => {{ try {{ return Boolean({expression}); }} catch (e) {{ return false; }} }})()"
            while not await self.evaluate(check):
                await anyio.sleep(0.1)

    async def screenshot(self, path: Path) -> Path:
        result = await self.send("Page.captureScreenshot", format="png")
        await anyio.Path(path).write_bytes(base64.b64decode(result["data"]))
        return path
