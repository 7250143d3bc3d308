"""JMS TextMessage bodies as ActiveMQ's STOMP connector really carries them.

A TextMessage published by a Java JMS client travels in OpenWire as Java's
*modified UTF-8*, and ActiveMQ hands those bytes to a STOMP consumer as they
are.  It differs from UTF-8 in two ways:

- a character outside the Basic Multilingual Plane (an emoji) is a UTF-16
  surrogate pair, each half encoded as its own 3-byte sequence (CESU-8):
  U+1F600 is ``ED A0 BD ED B8 80``, not ``F0 9F 98 80``;
- NUL is the overlong ``C0 80``, so the encoding never holds a zero byte.

The other direction has the same shape: ActiveMQ gives a STOMP frame's body
to a Java consumer as modified UTF-8 unchanged, and Java's reader refuses a
4-byte UTF-8 sequence (``getText()`` raises ``UTFDataFormatException``), so
text sent to a JMS application must be encoded the Java way.

:func:`decode_jms_text` reads both forms: a plain UTF-8 decode first (what
almost every message is), and only when that fails a second pass that
combines surrogate pairs into their code point and reads ``C0 80`` as NUL.
Anything else that strict UTF-8 refuses is still refused: an unpaired
surrogate (half a character), other overlong forms, stray bytes.
:func:`encode_jms_text` writes modified UTF-8 for the few characters that
need it and plain UTF-8 for everything else.
"""

from __future__ import annotations

import re

__all__ = ["decode_jms_text", "encode_jms_text"]

#: The two forms modified UTF-8 adds: NUL, and a high then a low surrogate half.
_JAVA_FORMS = re.compile(rb"\xc0\x80|\xed[\xa0-\xaf][\x80-\xbf]\xed[\xb0-\xbf][\x80-\xbf]")
#: Characters whose modified UTF-8 differs from their UTF-8.
_JAVA_ONLY = re.compile("[\x00\U00010000-\U0010ffff]")
_SURROGATE_HALF = re.compile(rb"\xed[\xa0-\xbf]")


def decode_jms_text(data: bytes) -> str:
    """``data`` as UTF-8 or Java's modified UTF-8; :class:`UnicodeDecodeError` if neither.

    The error's positions are offsets into ``data``, as a plain decode's are.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _decode_java_forms(data)


def encode_jms_text(text: str) -> bytes:
    """``text`` as Java's modified UTF-8 (which is UTF-8 unless it holds NUL or an emoji).

    A lone surrogate in ``text`` (half a character: a Python string can hold
    one, JSON's ``"\\ud800"`` makes one) becomes ``?``, as it did when stomp.py
    encoded bodies itself (``errors="replace"``).
    """
    if _JAVA_ONLY.search(text) is None:
        return text.encode("utf-8", "replace")
    parts: list[bytes] = []
    start = 0
    for match in _JAVA_ONLY.finditer(text):
        parts.append(text[start : match.start()].encode("utf-8", "replace"))
        parts.append(_java_bytes(match.group()))
        start = match.end()
    parts.append(text[start:].encode("utf-8", "replace"))
    return b"".join(parts)


def _decode_java_forms(data: bytes) -> str:
    """The slow path: strict UTF-8 between the Java-only forms, each form replaced."""
    parts: list[str] = []
    start = 0
    for match in _JAVA_FORMS.finditer(data):
        parts.append(_strict(data, start, match.start()))
        parts.append(_java_char(match.group()))
        start = match.end()
    parts.append(_strict(data, start, len(data)))
    return "".join(parts)


def _strict(data: bytes, start: int, end: int) -> str:
    """``data[start:end]`` as strict UTF-8; an error points into the whole of ``data``."""
    try:
        return data[start:end].decode("utf-8")
    except UnicodeDecodeError as err:
        at = start + err.start
        reason = err.reason
        if _SURROGATE_HALF.match(data, at):
            reason = "unpaired UTF-16 surrogate (half of a character)"
        raise UnicodeDecodeError("utf-8", data, at, start + err.end, reason) from None


def _java_char(form: bytes) -> str:
    """The character of one ``_JAVA_FORMS`` match."""
    if form == b"\xc0\x80":
        return "\x00"
    high = ((form[1] & 0x0F) << 6) | (form[2] & 0x3F)  # the pair's top 10 bits
    low = ((form[4] & 0x0F) << 6) | (form[5] & 0x3F)  # and its bottom 10
    return chr(0x10000 + (high << 10) + low)


def _java_bytes(char: str) -> bytes:
    """The modified UTF-8 of one ``_JAVA_ONLY`` character."""
    if char == "\x00":
        return b"\xc0\x80"
    offset = ord(char) - 0x10000
    pair = chr(0xD800 + (offset >> 10)) + chr(0xDC00 + (offset & 0x3FF))
    return pair.encode("utf-8", "surrogatepass")
