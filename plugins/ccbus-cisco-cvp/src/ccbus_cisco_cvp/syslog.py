"""CVP's syslog channel: RFC 5424 and RFC 3164 messages over UDP and TCP.

:func:`parse` turns one message into the ``data`` of a ``cvp.syslog`` event
(facility, severity, host, app, message, and the structured data of an RFC
5424 message); it raises :class:`SyslogError` with a reason for anything
that is not syslog, so the source can count and dead-letter it.

:class:`TcpFramer` splits a TCP stream into messages as RFC 6587 allows:
octet counting (``123 <34>1 ...``) or a newline after each message, decided
per message, as rsyslog does; a last message without its newline is
delivered when the peer closes (:meth:`TcpFramer.finish`).

UDP cannot push back: datagrams go into a bounded queue and, if the bus
falls behind, the overflow is dropped and counted, never silently.  What
the kernel drops before the source reads it (the socket's receive buffer
full) is read from the socket's ``drops`` column in ``/proc/net/udp``
(:func:`kernel_drops`) and counted too.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

from .errors import SyslogError

__all__ = ["FACILITIES", "SEVERITIES", "SyslogError", "TcpFramer", "kernel_drops", "parse"]

FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
    "local3", "local4", "local5", "local6", "local7",
)
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

_PRI = re.compile(rb"^<(\d{1,3})>")
_RFC3164_TIME = re.compile(
    r"^(?P<ts>(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d"
    r"(\.\d+)?( \d{4})?) "
)
_TAG = re.compile(r"^(?P<app>[^\s:\[]{1,48})(\[(?P<pid>[^\]]{1,128})\])?: ?")
_SD_NAME = re.compile(r"[^= \]\"]{1,32}")
_BOM = "\ufeff"


def parse(raw: bytes) -> dict[str, Any]:
    """The fields of one syslog message (RFC 5424 if it says version 1, else RFC 3164)."""
    raw = raw.rstrip(b"\r\n\x00")
    match = _PRI.match(raw)
    if match is None:
        raise SyslogError("no_priority", "syslog message does not start with <PRI>")
    pri = int(match.group(1))
    if pri > 191:
        raise SyslogError("bad_priority", f"syslog priority {pri} is out of range (0-191)")
    rest = raw[match.end():]
    fields: dict[str, Any] = {
        "facility": FACILITIES[pri >> 3],
        "facilityCode": pri >> 3,
        "severity": SEVERITIES[pri & 7],
        "severityCode": pri & 7,
    }
    if rest[:2] == b"1 ":
        fields.update(_rfc5424(rest[2:]))
    else:
        fields.update(_rfc3164(rest))
    return fields


def _nil(token: str) -> str | None:
    return None if token == "-" else token


def _rfc5424(rest: bytes) -> dict[str, Any]:
    header, _, remainder = _split(rest, 5)
    if len(header) < 5:
        raise SyslogError("bad_header", "RFC 5424 header is incomplete "
                                        "(timestamp host app procid msgid)")
    try:
        head = [token.decode("ascii") for token in header]
    except UnicodeDecodeError:
        raise SyslogError("bad_header", "RFC 5424 header is not ASCII") from None
    timestamp, host, app, procid, msgid = head
    structured, message_bytes = _structured_data(remainder)
    message = _decode(message_bytes)
    if message.startswith(_BOM):
        message = message[1:]
    fields: dict[str, Any] = {
        "format": "rfc5424",
        "timestamp": _nil(timestamp),
        "host": _nil(host),
        "app": _nil(app),
        "procid": _nil(procid),
        "msgid": _nil(msgid),
        "message": message,
    }
    if structured:
        fields["structuredData"] = structured
    return fields


def _split(data: bytes, count: int) -> tuple[list[bytes], bytes, bytes]:
    """``count`` space-separated tokens, and the rest."""
    tokens: list[bytes] = []
    rest = data
    for _ in range(count):
        token, sep, rest = rest.partition(b" ")
        if not token:
            break
        tokens.append(token)
        if not sep:
            rest = b""
            break
    return tokens, b" ", rest


def _structured_data(data: bytes) -> tuple[dict[str, dict[str, str]], bytes]:
    """``[id k="v" ...][id2 ...] MSG`` -> ({id: {k: v}}, MSG); ``- MSG`` -> ({}, MSG)."""
    if data.startswith(b"-"):
        return {}, data[2:] if data[1:2] == b" " else data[1:]
    if not data.startswith(b"["):
        if not data:
            return {}, b""
        raise SyslogError("bad_structured_data",
                          "RFC 5424 STRUCTURED-DATA must be '-' or start with '['")
    text = _decode(data)
    elements: dict[str, dict[str, str]] = {}
    i = 0
    while i < len(text) and text[i] == "[":
        match = _SD_NAME.match(text, i + 1)
        if match is None:
            raise SyslogError("bad_structured_data", "SD-ELEMENT without an SD-ID")
        sd_id = match.group(0)
        params: dict[str, str] = {}
        i = match.end()
        while i < len(text) and text[i] == " ":
            name = _SD_NAME.match(text, i + 1)
            if name is None or text[name.end():name.end() + 2] != '="':
                raise SyslogError("bad_structured_data", f"bad SD-PARAM in [{sd_id}]")
            j = name.end() + 2
            value: list[str] = []
            while j < len(text) and text[j] != '"':
                if text[j] == "\\" and j + 1 < len(text) and text[j + 1] in '"\\]':
                    j += 1
                value.append(text[j])
                j += 1
            if j >= len(text):
                raise SyslogError("bad_structured_data", f"unterminated value in [{sd_id}]")
            params[name.group(0)] = "".join(value)
            i = j + 1
        if i >= len(text) or text[i] != "]":
            raise SyslogError("bad_structured_data", f"[{sd_id}] is not closed")
        elements[sd_id] = params
        i += 1
    message = text[i + 1:] if text[i:i + 1] == " " else text[i:]
    return elements, message.encode("utf-8")


def _rfc3164(rest: bytes) -> dict[str, Any]:
    text = _decode(rest)
    fields: dict[str, Any] = {"format": "rfc3164", "timestamp": None, "host": None,
                              "app": None, "procid": None, "msgid": None}
    match = _RFC3164_TIME.match(text)
    if match:
        fields["timestamp"] = match.group("ts")
        text = text[match.end():]
        # HOSTNAME, unless the sender left it out and went straight to the tag
        host, sep, after = text.partition(" ")
        if sep and host and not host.endswith(":") and "[" not in host:
            fields["host"] = host
            text = after
    tag = _TAG.match(text)
    if tag:
        fields["app"] = tag.group("app")
        fields["procid"] = tag.group("pid")
        text = text[tag.end():]
    fields["message"] = text
    return fields


def _decode(data: bytes) -> str:
    # RFC 5424 MSG is UTF-8 (or any octets); a bad byte must not lose the message
    return data.decode("utf-8", "replace")


class TcpFramer:
    """Splits a syslog TCP stream into messages (RFC 6587 octet counting or LF-terminated)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete messages ``chunk`` finished; raises :class:`SyslogError` on overrun."""
        self.buffer += chunk
        messages: list[bytes] = []
        while self.buffer:
            first = self.buffer[:1]
            if first.isdigit():
                length, sep, rest = self.buffer.partition(b" ")
                if not sep:
                    if len(length) > 10:
                        raise SyslogError("bad_framing", "octet count is not a number")
                    break
                if not length.isdigit():
                    raise SyslogError("bad_framing", f"bad octet count {length[:20]!r}")
                size = int(length)
                if size > self.max_bytes:
                    raise SyslogError("too_long",
                                      f"TCP frame of {size} bytes exceeds {self.max_bytes}")
                if len(rest) < size:
                    break
                messages.append(rest[:size])
                self.buffer = rest[size:]
            else:
                line, sep, rest = self.buffer.partition(b"\n")
                if len(line) > self.max_bytes:
                    raise SyslogError("too_long", f"TCP line longer than {self.max_bytes} bytes")
                if not sep:
                    break
                if line.strip(b"\r\x00"):
                    messages.append(line)
                self.buffer = rest
        return messages

    def finish(self) -> list[bytes]:
        """The message the stream ended in the middle of, as the peer closed.

        A sender may close right after its last message without the newline
        (``logger``, ``nc``, rsyslog's last line): that message is complete and
        is delivered, as rsyslog does.  An octet-counted frame cut short is not
        (its length says so): :class:`SyslogError` ``truncated_frame``.
        """
        rest, self.buffer = self.buffer, b""
        if not rest.strip(b"\r\n\x00"):
            return []
        if rest[:1].isdigit():
            raise SyslogError("truncated_frame", "the connection closed in the middle of an "
                                                 f"octet-counted frame ({len(rest)} bytes)")
        return [rest]


def kernel_drops(sock: socket.socket, proc: Path = Path("/proc/net")) -> int | None:
    """Datagrams the kernel dropped for ``sock`` since it was opened (its receive
    buffer was full), or None where that cannot be read (not Linux).

    Linux keeps the count per socket and shows it as the last column (``drops``)
    of ``/proc/net/udp`` and ``udp6``, on the line whose ``inode`` is the
    socket's.  (``SO_RXQ_OVFL`` gives the same number, but only as ancillary
    data of ``recvmsg``, which the event loop's datagram transport does not use.)
    """
    inode = str(os.fstat(sock.fileno()).st_ino)
    name = "udp6" if sock.family == socket.AF_INET6 else "udp"
    try:
        lines = (proc / name).read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 13 and fields[9] == inode:
            return int(fields[-1])
    return None
