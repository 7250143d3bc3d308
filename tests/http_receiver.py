"""A real HTTP/1.1 server for tests: records requests and misbehaves on demand.

Actions that talk HTTP are tested against this receiver over loopback, never
against a mocked client, so connection pooling, timeouts, keep-alive and
redirect handling are exercised for real.  It runs ``http.server`` in a
background thread on ``127.0.0.1`` and works the same from sync and async
tests (the server never touches the test's event loop)::

    from http_receiver import HttpReceiver

    @pytest.fixture
    def receiver() -> Iterator[HttpReceiver]:
        with HttpReceiver() as r:          # a free port; HttpReceiver(port=8899) for a fixed one
            yield r

    def test_something(receiver):
        url = receiver.url_for("/hook")    # "http://127.0.0.1:<port>/hook"
        receiver.fail(2, status=503)       # the next 2 requests (any path) get 503
        receiver.throttle("7", path="/hook")   # then one 429 with Retry-After: 7 on /hook
        ...
        [first, *rest] = receiver.wait_for(3, timeout=5)   # blocking; in async tests:
        # await receiver.wait_for_async(3, timeout=5)
        assert first.headers["idempotency-key"] == "..."   # header names are lower case
        assert first.json() == {...}

Behaviours (each returns the receiver, so they chain) are consulted in the
order they were added; the first whose ``path`` matches (``None``: any path)
and which has answers left decides the response; when none does, the
default answer is given (``HttpReceiver(status=200, body=b'{"ok":true}')``):

* ``respond(status, body, headers=, times=, path=, hang=, raw=)``: the general form.
* ``fail(times=1, status=503)``: fail the next ``times`` requests.
* ``throttle(retry_after="7", times=1)``: 429 with ``Retry-After`` (seconds or an HTTP-date).
* ``hang(seconds=None, times=None)``: hold requests before answering, for
  ``seconds`` or until :meth:`release` (or :meth:`stop`).
* ``garbage(times=1, status=200, body=...)``: a non-JSON body, an odd status;
  ``raw=b"..."`` writes bytes that are not HTTP at all and closes the connection.
* ``reset()`` forgets all behaviours; ``clear()`` forgets recorded requests.

Being down: :meth:`stop` closes the listening socket *and* every open
connection (a keep-alive connection would otherwise keep answering), so a
client sees "connection refused"; :meth:`start` listens again on the same
port (``SO_REUSEADDR``), keeping recorded requests and behaviours, which is
what crash and outbox tests need.  Every request is recorded on arrival,
before any hang, as a :class:`RecordedRequest`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["HttpReceiver", "RecordedRequest"]

DEFAULT_BODY = b'{"ok":true}'


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as it arrived."""

    method: str
    #: The path without the query string.
    path: str
    #: The request target as sent (path and query).
    target: str
    #: The query string's parameters (the last value wins for repeated keys).
    query: dict[str, str]
    #: Lower-case header names; repeated headers joined with ", ".
    headers: dict[str, str]
    body: bytes
    #: ``time.time()`` and ``time.monotonic()`` when the request was complete.
    time: float
    monotonic: float
    #: The status the receiver chose (0 for ``raw`` answers).
    status: int

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


@dataclass(slots=True)
class _Behaviour:
    path: str | None
    times: int | None  # None: until reset()
    status: int = 200
    body: bytes = DEFAULT_BODY
    headers: dict[str, str] = field(default_factory=dict)
    hang: float | None = None  # seconds; math.inf: until release()
    raw: bytes | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], receiver: HttpReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients going away mid-answer (timeouts, stop()) are normal here.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.receiver._opened(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.receiver._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        receiver = self.server.receiver
        body = self._read_body()
        parts = urlsplit(self.path)
        behaviour = receiver._choose(parts.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        receiver._record(
            RecordedRequest(
                method=self.command,
                path=parts.path,
                target=self.path,
                query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                headers=headers,
                body=body,
                time=time.time(),
                monotonic=time.monotonic(),
                status=0 if behaviour.raw is not None else behaviour.status,
            )
        )
        if behaviour.hang is not None:
            receiver._hold(behaviour.hang)
        if behaviour.raw is not None:
            self.wfile.write(behaviour.raw)
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_response(behaviour.status)
        for name, value in behaviour.headers.items():
            self.send_header(name, value)
        no_body = behaviour.status < 200 or behaviour.status in (204, 304)
        if not no_body:
            self.send_header("Content-Length", str(len(behaviour.body)))
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(behaviour.body)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


class HttpReceiver:
    """A recording, scriptable HTTP/1.1 server on ``host:port`` (see the module docs)."""

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        status: int = 200,
        body: bytes = DEFAULT_BODY,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.default = _Behaviour(
            path=None,
            times=None,
            status=status,
            body=body,
            headers=dict(headers or {"Content-Type": "application/json"}),
        )
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._behaviours: list[_Behaviour] = []
        self._release = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> HttpReceiver:
        """Listen (again): on a free port the first time if ``port`` was 0, then on the same."""
        if self._server is not None:
            return self
        deadline = time.monotonic() + 5.0
        while True:
            try:
                server = _Server((self.host, self.port), self)
                break
            except OSError as err:  # the old socket may linger for a moment after stop()
                if err.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.port = server.server_address[1]
        with self._lock:
            self._release = threading.Event()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"http-receiver:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down: stop listening, drop open connections, wake hung requests."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            self._release.set()
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "up" if self.running else "down"
        return f"<HttpReceiver {self.url} {state}, {len(self._requests)} request(s)>"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    def url_for(self, path: str = "/") -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    # -- behaviours ---------------------------------------------------------------

    def respond(
        self,
        status: int = 200,
        body: bytes | str = DEFAULT_BODY,
        *,
        headers: Mapping[str, str] | None = None,
        times: int | None = None,
        path: str | None = None,
        hang: float | None = None,
        raw: bytes | None = None,
    ) -> HttpReceiver:
        """Answer the next ``times`` requests (``None``: all) to ``path`` (``None``: any) so.

        ``hang`` delays the answer by that many seconds (``math.inf``: until
        :meth:`release`); ``raw`` replaces the whole answer with these bytes.
        """
        if isinstance(body, str):
            body = body.encode("utf-8")
        with self._lock:
            self._behaviours.append(
                _Behaviour(
                    path=path,
                    times=times,
                    status=status,
                    body=body,
                    headers=dict(headers or {}),
                    hang=hang,
                    raw=raw,
                )
            )
        return self

    def fail(
        self,
        times: int = 1,
        status: int = 503,
        *,
        path: str | None = None,
        body: bytes | str = b"service unavailable",
        headers: Mapping[str, str] | None = None,
    ) -> HttpReceiver:
        """Fail the next ``times`` requests with ``status``."""
        return self.respond(status, body, headers=headers, times=times, path=path)

    def throttle(
        self,
        retry_after: str | float = "7",
        times: int = 1,
        *,
        path: str | None = None,
        status: int = 429,
    ) -> HttpReceiver:
        """Answer 429 with ``Retry-After`` (seconds, or an HTTP-date string)."""
        value = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
        return self.respond(
            status, b"slow down", headers={"Retry-After": value}, times=times, path=path
        )

    def hang(
        self, seconds: float | None = None, *, times: int | None = None, path: str | None = None
    ) -> HttpReceiver:
        """Hold requests ``seconds`` (``None``: until :meth:`release`), then answer normally."""
        default = self.default
        return self.respond(
            default.status,
            default.body,
            headers=default.headers,
            times=times,
            path=path,
            hang=math.inf if seconds is None else seconds,
        )

    def garbage(
        self,
        times: int = 1,
        *,
        path: str | None = None,
        status: int = 200,
        body: bytes | str = b"<html>\x00\xff not json",
        raw: bytes | None = None,
    ) -> HttpReceiver:
        """A body that is not JSON with any ``status``; or ``raw`` bytes that are not HTTP."""
        return self.respond(
            status, body, headers={"Content-Type": "text/html"}, times=times, path=path, raw=raw
        )

    def release(self) -> None:
        """Answer every hung request now, and stop hanging new ones."""
        with self._lock:
            self._behaviours = [b for b in self._behaviours if b.hang is None]
            self._release.set()
            self._release = threading.Event()

    def reset(self) -> None:
        """Forget all behaviours (hung requests are released); recorded requests stay."""
        self.release()
        with self._lock:
            self._behaviours.clear()

    def clear(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self._requests.clear()

    # -- what arrived -------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request recorded so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests were recorded; returns them all.

        Raises :class:`TimeoutError` naming how many did arrive.  Do not call
        this from an async test whose own request is still in flight on the
        same loop: use :meth:`wait_for_async` there.
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._requests)} request(s) arrived within {timeout}s, "
                        f"expected {count}"
                    )
                self._arrived.wait(left)
            return list(self._requests)

    async def wait_for_async(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """:meth:`wait_for` without blocking the event loop."""
        import anyio

        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self._requests) >= count:
                    return list(self._requests)
                arrived = len(self._requests)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{arrived} request(s) arrived within {timeout}s, expected {count}"
                )
            await anyio.sleep(0.005)

    # -- used by the handler threads ------------------------------------------------

    def _choose(self, path: str) -> _Behaviour:
        with self._lock:
            for behaviour in self._behaviours:
                if behaviour.path is not None and behaviour.path != path:
                    continue
                if behaviour.times is not None:
                    behaviour.times -= 1
                    if behaviour.times <= 0:
                        self._behaviours.remove(behaviour)
                return behaviour
            return self.default

    def _record(self, request: RecordedRequest) -> None:
        with self._arrived:
            self._requests.append(request)
            self._arrived.notify_all()

    def _hold(self, seconds: float) -> None:
        with self._lock:
            release = self._release
        release.wait(None if math.isinf(seconds) else seconds)

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)
