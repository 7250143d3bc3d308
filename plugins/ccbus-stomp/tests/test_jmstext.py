"""Java's modified UTF-8 against a transcription of Java's own encoder.

``java_modified_utf8`` follows ``DataOutputStream.writeUTF`` (and ActiveMQ's
``MarshallingSupport.writeUTF8``, which OpenWire uses for a TextMessage):
UTF-16 code units, NUL as two bytes, each surrogate half as three.  The
interop tests (``test_connection.py``) check the same thing against a real
Java client and broker.
"""

from __future__ import annotations

import pytest
from ccbus_stomp import decode_jms_text, encode_jms_text


def java_modified_utf8(text: str) -> bytes:
    """What a Java JMS client puts on the wire for ``text``."""
    units = text.encode("utf-16-be", "surrogatepass")
    out = bytearray()
    for i in range(0, len(units), 2):
        unit = (units[i] << 8) | units[i + 1]
        if 0 < unit <= 0x7F:
            out.append(unit)
        elif unit <= 0x7FF:
            out += bytes((0xC0 | unit >> 6, 0x80 | unit & 0x3F))
        else:
            out += bytes((0xE0 | unit >> 12, 0x80 | (unit >> 6) & 0x3F, 0x80 | unit & 0x3F))
    return bytes(out)


def _code_points() -> list[int]:
    """Every BMP character and a spread of the others, plane edges included."""
    bmp = [c for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    beyond = set(range(0x10000, 0x110000, 97))
    for plane in range(1, 17):
        beyond |= {plane << 16, (plane << 16) + 1, (plane << 16) + 0xFFFF}
    return bmp + sorted(beyond)


def _chunks(size: int = 2048) -> list[str]:
    points = _code_points()
    return ["".join(map(chr, points[i : i + size])) for i in range(0, len(points), size)]


@pytest.mark.parametrize("text", _chunks())
def test_reads_and_writes_what_java_writes_for_every_character(text: str) -> None:
    wire = java_modified_utf8(text)
    assert decode_jms_text(wire) == text
    assert encode_jms_text(text) == wire


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        (b"plain ascii", "plain ascii"),
        ("Zoë – 日本".encode(), "Zoë – 日本"),
        (b"\xed\xa0\xbd\xed\xb8\x80", "\U0001f600"),  # the example, U+1F600
        (b"a\xc0\x80b", "a\x00b"),
        (b"\xc0\x80", "\x00"),
        (b"\xf0\x9f\x98\x80", "\U0001f600"),  # standard UTF-8 still reads
        (b"\xf0\x9f\x98\x80 \xed\xa0\xbd\xed\xb8\x80\xc0\x80", "\U0001f600 \U0001f600\x00"),
        (b"\xed\xaf\xbf\xed\xbf\xbf", "\U0010ffff"),  # the last code point
        (b"\xed\xa0\x80\xed\xb0\x80", "\U00010000"),  # the first one beyond the BMP
        (b"", ""),
    ],
)
def test_decodes_utf8_and_the_java_forms(wire: bytes, text: str) -> None:
    assert decode_jms_text(wire) == text


@pytest.mark.parametrize(
    ("wire", "position", "reason"),
    [
        (b"ab\xed\xa0\xbd", 2, "unpaired"),  # a high half at the end
        (b"ab\xed\xa0\xbdcd", 2, "unpaired"),  # a high half then text
        (b"\xed\xb8\x80", 0, "unpaired"),  # a low half alone
        (b"x\xed\xb8\x80\xed\xa0\xbd", 1, "unpaired"),  # the halves the wrong way round
        (b"\xed\xa0\xbd\xed\xa0\xbd\xed\xb8\x80", 0, "unpaired"),  # two highs, one low
        (b"\xed\xa0\xbd\xf0\x9f\x98\x80", 0, "unpaired"),  # a high half, then a whole emoji
        (b"\xc1\x81", 0, "invalid start byte"),  # overlong 'A'
        (b"\xc0\x81", 0, "invalid start byte"),  # overlong, not NUL
        (b"\xe0\x80\x80", 0, "invalid continuation byte"),  # NUL in three bytes
        (b"\xf0\x80\x80\x80", 0, "invalid continuation byte"),  # NUL in four bytes
        (b"\xf4\x90\x80\x80", 0, "invalid continuation byte"),  # beyond U+10FFFF
        (b"ok\xff", 2, "invalid start byte"),
        (b"\xc0\x80\xff", 2, "invalid start byte"),  # after a Java form: still refused
        (b"\xed\xa0\xbd\xed\xb8\x80ab\xe2\x82", 8, "unexpected end of data"),
        (b"\xe2\xc0\x80", 0, "unexpected end of data"),  # a cut sequence before NUL
    ],
)
def test_refuses_what_is_really_broken_and_says_where(
    wire: bytes, position: int, reason: str
) -> None:
    with pytest.raises(UnicodeDecodeError) as caught:
        decode_jms_text(wire)
    assert caught.value.object == wire
    assert caught.value.start == position
    assert reason in caught.value.reason


def test_writes_utf8_unless_a_character_needs_the_java_form() -> None:
    assert encode_jms_text("Zoë – 日本") == "Zoë – 日本".encode()
    assert encode_jms_text("a\x00b\U0001f600") == b"a\xc0\x80b\xed\xa0\xbd\xed\xb8\x80"
    assert b"\x00" not in encode_jms_text("\x00" * 3)  # a NUL would end a STOMP frame
    assert encode_jms_text("a\ud800b") == b"a?b"  # half a character: as stomp.py wrote it
