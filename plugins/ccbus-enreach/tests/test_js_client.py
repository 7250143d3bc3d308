"""Microsoft's SignalR JavaScript client (``@microsoft/signalr`` from the npm registry, run
with the machine's node) connects to the simulator, subscribes and receives MessageReceived.

This proves the simulator speaks SignalR as ASP.NET Core does, not merely as
signalrcore expects.  The client is installed with npm into a cache
directory (``$CCBUS_NPM_CACHE``, default ``~/.cache/ccbus/npm``); ``.ci/run``
installs it there before the tests, so CI needs no network at test time, and
a developer's first run installs it here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from ccbus_enreach.scenarios import ANNA
from ccbus_enreach.simulator import RteSimulator

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).parent / "js" / "rte_client.cjs"
PACKAGE = "@microsoft/signalr@10"


def signalr_dir() -> Path:
    """Where ``node_modules/@microsoft/signalr`` is, installing it with npm if needed."""
    cache = Path(os.environ.get("CCBUS_NPM_CACHE", Path.home() / ".cache" / "ccbus" / "npm"))
    if (cache / "node_modules" / "@microsoft" / "signalr" / "package.json").exists():
        return cache
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed (the CI script installs node and npm)"
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", PACKAGE],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return cache


async def test_microsofts_javascript_client_subscribes_and_receives() -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed (the CI script installs it)"
    directory = await anyio.to_thread.run_sync(signalr_dir)
    lines: list[dict[str, Any]] = []
    async with RteSimulator() as sim:
        command = [node, str(SCRIPT), sim.url, sim.username, sim.secret, ANNA, "UserStatus", "3"]
        env = {**os.environ, "SIGNALR_DIR": str(directory)}
        async with await anyio.open_process(command, env=env) as process:
            assert process.stdout is not None
            buffer = b""

            async def read_until(kind: str) -> dict[str, Any]:
                nonlocal buffer
                while True:
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        doc = json.loads(line)
                        lines.append(doc)
                        assert doc["kind"] != "error", doc
                        if doc["kind"] == kind:
                            return doc
                    buffer += await process.stdout.receive()  # type: ignore[union-attr]

            with anyio.fail_after(60):
                subscribed = await read_until("subscribed")
                assert [(r["subscribed"], r["message"]) for r in subscribed["value"]] == [
                    (True, None),
                    (False, "Invalid EntityId"),
                ]
                await read_until("active")
                for n in range(3):
                    assert await sim.publish("UserStatus", ANNA, {"Note": f"n{n}"}) == 1
                await read_until("stopped")
                assert await process.wait() == 0
    kinds = [doc["kind"] for doc in lines]
    assert kinds[:5] == ["token", "connected", "available", "subscribed", "active"]
    available = next(d["value"] for d in lines if d["kind"] == "available")
    assert "UserStatus" in available and "QueueStatus" in available
    active = next(d["value"] for d in lines if d["kind"] == "active")
    assert [(a["entityId"], a["eventType"]) for a in active] == [(ANNA, "UserStatus")]
    messages = [d["value"] for d in lines if d["kind"] == "message"]
    assert [m["data"]["note"] for m in messages] == ["n0", "n1", "n2"]
    assert {m["subscription"]["entityId"] for m in messages} == {ANNA}
    assert next(d["value"] for d in lines if d["kind"] == "unsubscribeAll") is True
    assert sim.stats.negotiations == 1  # the JS client negotiates (version 1) first
    assert sim.stats.handshakes == 1
