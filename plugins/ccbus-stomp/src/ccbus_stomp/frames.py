"""Reading MESSAGE frames and writing ACKs without stomp.py's per-header regexes.

stomp.py parses every received frame with ``re.sub`` on each header key and
value (to undo STOMP's ``\\c``/``\\n``/``\\r``/``\\\\`` escapes), looked up
in ``re``'s cache each time: about 40 µs of a ~600-byte MESSAGE frame's
~65 µs on the development VM, on the receiver thread, holding the GIL the
bus needs.  :func:`parse_frame` gives the same :class:`stomp.utils.Frame`
(same command, headers, first-occurrence-wins, body) in a fraction of that:
it splits with ``str`` methods and unescapes only a header that has a
backslash.  ``tests/test_frames.py`` checks it against stomp.py's own parser.

:class:`Connection` is ``stomp.Connection12`` with a transport that uses it;
everything else (socket, TLS, heartbeats, sending, listeners) is stomp.py's.

:func:`ack_frames` encodes many ACK frames into one buffer, so a batch of
acknowledgements is one ``sendall`` instead of one frame-building and
listener round per message.
"""

from __future__ import annotations

import re
from typing import Any

import stomp
import stomp.connect
import stomp.protocol
import stomp.transport
from stomp.utils import HEARTBEAT_FRAME, Frame

__all__ = ["Connection", "ack_frames", "parse_frame"]

_PREAMBLE_END = re.compile(b"\n\n|\r\n\r\n")
_EOLS = (b"\n", b"\r\n")


def _unescape(text: str) -> str:
    """Undo STOMP 1.2's header escapes; an unknown escape stays as it is (as in stomp.py).

    Escaped backslashes are split off first, so ``\\\\c`` stays a backslash and a ``c``.
    """
    if "\\\\" not in text:
        return text.replace("\\c", ":").replace("\\n", "\n").replace("\\r", "\r")
    return "\\".join(
        part.replace("\\c", ":").replace("\\n", "\n").replace("\\r", "\r")
        for part in text.split("\\\\")
    )


def parse_frame(raw: bytes) -> Frame | None:
    """One frame (without its NUL) as stomp.py's ``utils.parse_frame`` would return it."""
    end = _PREAMBLE_END.search(raw)
    if end is None:
        preamble, body = raw, b""
    else:
        preamble, body = raw[: end.start()], raw[end.end() :]
    text = preamble.decode("utf-8", "replace")
    lines = (text.replace("\r\n", "\n") if "\r" in text else text).split("\n")
    first = 0
    while first < len(lines) and not lines[first]:
        first += 1
    if first >= len(lines):
        return None
    headers: dict[str, str] = {}
    for line in lines[first + 1 :]:
        key, colon, value = line.partition(":")
        if not colon or not key:
            continue  # not a header line: stomp.py skips it too
        if "\\" in line:
            key, value = _unescape(key), _unescape(value)
        if key not in headers:  # STOMP 1.2: the first occurrence wins
            headers[key] = value
    return Frame(lines[first], headers, body)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\c").replace("\r", "\\r")


def ack_frames(ack_ids: list[str]) -> bytes:
    """STOMP 1.2 ACK frames for ``ack_ids``, one after another, ready for one write."""
    return "".join(f"ACK\nid:{_escape(ack_id)}\n\n\x00" for ack_id in ack_ids).encode("utf-8")


class _Transport(stomp.transport.Transport):  # type: ignore[misc]
    """stomp.py's transport, reading frames with :func:`parse_frame`.

    ``_BaseTransport__read_frames`` is the name stomp.py's receive loop calls
    (``self.__read_frames()`` inside ``BaseTransport``); the raw reading
    (``__read``: socket, buffering, content-length) stays stomp.py's.
    """

    def _BaseTransport__read_frames(self) -> None:  # noqa: N802 - stomp.py's mangled name
        for raw in self._BaseTransport__read():
            frame = HEARTBEAT_FRAME if raw in _EOLS else parse_frame(raw)
            if frame is not None:
                self.process_frame(frame, raw)

    def process_frame(self, f: Frame, frame_str: bytes) -> None:
        if f.cmd == "MESSAGE":
            # stomp.py also notifies "before_message" first: a second round over the
            # listeners per message, and neither of this connection's listeners has one
            self.notify("message", f)
        else:
            super().process_frame(f, frame_str)


class Connection(stomp.connect.StompConnection12):  # type: ignore[misc]
    """``stomp.Connection12`` on :class:`_Transport` (the same arguments; ``auto_decode``
    is off: bodies stay bytes)."""

    def __init__(
        self,
        host_and_ports: list[tuple[str, int]],
        *,
        prefer_localhost: bool = False,
        try_loopback_connect: bool = False,
        reconnect_attempts_max: int = 1,
        timeout: float | None = None,
        heartbeats: tuple[int, int] = (0, 0),
        vhost: str | None = None,
        auto_content_length: bool = False,
    ) -> None:
        transport: Any = _Transport(
            host_and_ports,
            prefer_localhost=prefer_localhost,
            try_loopback_connect=try_loopback_connect,
            reconnect_attempts_max=reconnect_attempts_max,
            timeout=timeout,
            vhost=vhost,
            auto_decode=False,
        )
        stomp.connect.BaseConnection.__init__(self, transport)
        stomp.protocol.Protocol12.__init__(
            self, transport, heartbeats, auto_content_length, heart_beat_receive_scale=1.5
        )
