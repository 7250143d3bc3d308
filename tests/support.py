"""Helpers shared by the core tests (importable as ``support``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    """Write dedented text, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# -- a real `ccbus run` process ------------------------------------------------------

import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402

CCBUS = str(Path(sys.executable).parent / "ccbus")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_ccbus(config: Path, log: Path, env: Mapping[str, str] | None = None,
                args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """``ccbus run -c config`` with stdout and stderr appended to ``log``; built-ins only."""
    handle = log.open("ab")
    full_env = {**os.environ, "CCBUS_DISABLE_PLUGIN_AUTOLOAD": "1", **(env or {})}
    return subprocess.Popen([CCBUS, "run", "-c", str(config), *args], stdout=handle,
                            stderr=handle, env=full_env)


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               log: Path | None = None) -> None:
    """Poll ``predicate`` until true; on timeout fail with the process log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; ccbus log:\n{tail}")


def answers(url: str) -> bool:
    """True once ``url`` answers 200 (the listener is up)."""
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
