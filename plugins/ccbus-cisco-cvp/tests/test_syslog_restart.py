"""A failed source gives its syslog ports back, so the bus's restart can bind them again.

The bus restarts a source whose ``run()`` raised by calling ``run()`` again
on the same object.  Every way out of ``run()`` must therefore release both
listeners, or every restart fails with "address already in use" for as long
as the process lives.  The failure here is a real one: the bus cannot
record an event's actions because another process holds the outbox's write
lock (as an admin's ``sqlite3`` shell or a backup tool can).  The messages come
from util-linux's ``logger``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from ccbus.testing import wait_until

pytestmark = pytest.mark.anyio

SQLITE3 = shutil.which("sqlite3") or "sqlite3"
LOGGER = shutil.which("logger") or "logger"


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_tcp_port() -> int:
    return free_port(socket.SOCK_STREAM)


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


async def logger(*args: str) -> None:
    """Run util-linux's logger; it must succeed."""
    result = await anyio.run_process([LOGGER, *args], check=False)
    assert result.returncode == 0, result.stderr


@contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """Another process (the ``sqlite3`` shell) holds ``database``'s write lock meanwhile."""
    shell = subprocess.Popen(  # noqa: S603 - a fixed command on a test file
        [SQLITE3, "-cmd", "BEGIN EXCLUSIVE;", "-cmd", ".print locked", str(database)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert shell.stdout is not None and shell.stdout.readline() == "locked\n"
        yield
    finally:
        assert shell.stdin is not None
        shell.stdin.close()  # the shell ends, and the lock with it
        shell.wait(timeout=30)


def recorded(h: Any, text: str) -> bool:
    return any(text in str(call.value) for call in h.recorder.of("cvp.syslog"))


async def test_a_failed_source_binds_its_syslog_ports_again_on_restart(
    tmp_path: Path, cvp_bus: Any,
) -> None:
    tcp, udp = free_tcp_port(), free_udp_port()
    options = {"syslog": {"udp": f"127.0.0.1:{udp}", "tcp": f"127.0.0.1:{tcp}"}}
    # a durable outbox, written from a worker thread (the lock wait must not stop the loop)
    delivery = {"outbox": True, "synchronous": "full"}
    async with cvp_bus(options, delivery=delivery) as h:
        runtime = h.bus.sources["cvp"]
        await h.wait_until(lambda: runtime.state == "listening", timeout=60)
        await logger("--tcp", "-n", "127.0.0.1", "-P", str(tcp), "--rfc5424", "before")
        await h.wait_until(lambda: recorded(h, "before"), timeout=60)
        # the delivered call is forgotten in a batch after it ran: wait for that, or the
        # batch's DELETE meets the lock below and fails the bus, not the source
        await h.wait_until(lambda: h.bus.delivery_store.pending_count() == 0, timeout=60)

        with write_locked(tmp_path / "state" / "delivery.sqlite3"):
            # the next message's action cannot be recorded: emit raises, the source fails
            # while its TCP listener is bound (and serving this very connection)
            await logger("--tcp", "-n", "127.0.0.1", "-P", str(tcp), "--rfc5424", "locked out")
            await h.wait_until(lambda: runtime.restarts >= 1, timeout=120)
            assert "locked" in (runtime.last_error or "")
        await h.wait_until(lambda: runtime.state == "listening", timeout=120)

        await logger("--tcp", "-n", "127.0.0.1", "-P", str(tcp), "--rfc5424", "after, tcp")
        await logger("--udp", "-n", "127.0.0.1", "-P", str(udp), "--rfc5424", "after, udp")
        await h.wait_until(lambda: recorded(h, "after, tcp") and recorded(h, "after, udp"),
                           timeout=60)
        # the first restart bound both ports: no attempt failed on "address in use"
        assert runtime.restarts == 1, runtime.last_error
        assert h.source().tcp_port == tcp and h.source().udp_port == udp


async def test_stopping_the_source_releases_both_ports(tmp_path: Path, cvp_source: Any) -> None:
    tcp, udp = free_tcp_port(), free_udp_port()
    options = {"syslog": {"udp": f"127.0.0.1:{udp}", "tcp": f"127.0.0.1:{tcp}"}}
    async with cvp_source(options) as c:
        await logger("--tcp", "-n", "127.0.0.1", "-P", str(tcp), "--rfc5424", "hello")
        await wait_until(lambda: len(c.events) == 1, timeout=30)
    with socket.socket() as tcp_again, socket.socket(type=socket.SOCK_DGRAM) as udp_again:
        # SO_REUSEADDR passes over closed connections (TIME_WAIT), never over a listener
        tcp_again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp_again.bind(("127.0.0.1", tcp))  # "address already in use" if still bound
        tcp_again.listen()
        udp_again.bind(("127.0.0.1", udp))
