"""The fast frame parser gives what stomp.py's own parser gives; ACK batches parse back."""

from __future__ import annotations

import random

import pytest
import stomp.utils
from ccbus_stomp.frames import ack_frames, parse_frame

FRAMES = [
    # a MESSAGE as ActiveMQ sends it: ids escape their colons
    b"MESSAGE\ncontent-length:13\ndestination:/topic/cvp/calls/ended\nsubscription:sub-1\n"
    b"ack:ID\\chost-1-2\\c1\\c1\\c7\nmessage-id:ID\\chost-1-2\\c1\\c1\\c7\n\n{\"a\": \"b:c\"}",
    b"\n\nRECEIPT\nreceipt-id:s-1-2\n\n",  # leading EOLs
    b"CONNECTED\r\nversion:1.2\r\nserver:ActiveMQ/5.17\r\n\r\nbody",  # CRLF lines
    b"MESSAGE\nfoo:first\nfoo:second\n\n",  # repeated header: the first wins
    b"ERROR\nmessage:a\\nb\\rc\\\\d\\ce\nbad line\n:novalue\nkey:\n\nwhat went wrong",
    b"MESSAGE\nx:\\\\c stays\ny:\\t unknown\nz:trailing\\\n\n",  # escaped backslash, unknown
    b"MESSAGE\nk\\cey:v\\c\\c\n\n\x00inside",  # escaped key; body holding a NUL
    b"MESSAGE\nheader-only",  # no blank line, no body
    b"",
    b"\n\n\n",
    "MESSAGE\ntype:Café\\cau lait\n\nbody é".encode(),
    b"MESSAGE\nbad:\xff\xfe\n\n\xff",  # not UTF-8 in a header: replaced, like stomp.py
]


def _same(raw: bytes) -> None:
    ours, theirs = parse_frame(raw), stomp.utils.parse_frame(raw)
    if theirs is None:
        assert ours is None
        return
    assert ours is not None
    assert (ours.cmd, ours.headers, ours.body) == (theirs.cmd, theirs.headers, theirs.body)


@pytest.mark.parametrize("raw", FRAMES)
def test_parse_frame_matches_stomp_py(raw: bytes) -> None:
    _same(raw)


def test_parse_frame_matches_stomp_py_on_random_frames() -> None:
    """Seeded fuzz over the characters that matter: escapes, colons, both line ends."""
    rng = random.Random(20261203)
    alphabet = ["a", "b", ":", "\\", "c", "n", "r", "\r", "\n", "\r\n", "é", " "]
    for _ in range(5000):
        lines = ["MESSAGE" if rng.random() < 0.8 else ""]
        for _ in range(rng.randint(0, 6)):
            lines.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))))
        raw = "\n".join(lines).encode() + rng.choice([b"\n\n", b"\r\n\r\n", b""]) + b"body"
        _same(raw)


def test_ack_frames_parse_back_to_each_id() -> None:
    ids = ["ID:host-1-2:1:1:7", "plain", "back\\slash", "new\nline", "cr\rid"]
    data = ack_frames(ids)
    frames = [stomp.utils.parse_frame(raw) for raw in data.split(b"\x00") if raw]
    assert [f.cmd for f in frames] == ["ACK"] * len(ids)
    assert [f.headers for f in frames] == [{"id": ack_id} for ack_id in ids]
