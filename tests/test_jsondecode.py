"""decode_json gives exactly what json.loads gives: the same value, or the same kind of error."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from ccbus import decode_json

EDGE_CASES = [
    b'{"a": 1, "a": 2}',  # the last duplicate wins
    b"123456789012345678901234567890",  # beyond 64 bits: stays an exact int
    b"-123456789012345678901234567890",
    b"1.7976931348623157e308",
    b"0.1000000000000000055511151231257827",
    b"-0",
    b"-0.0",
    b"1E5",
    b' \t\n\r[1, "x", null, true, false] ',
    '"caf\u00e9 \\u00e9 \\ud83d\\ude00"'.encode(),
    "\ufeff{}".encode(),  # byte-order mark: json.loads accepts it in bytes
    b'{"nested": {"deeper": [{"x": [1, 2, {"y": "z"}]}]}}',
]

#: json.loads accepts these, RFC 8259 does not: refused like any other bad input.
NOT_RFC_8259: list[bytes | str] = [
    b"NaN", b"[Infinity, -Infinity]", b"-Infinity", b'{"x": NaN}', b"1e400", b"[-1e400]",
    b'"\\ud800"', b'{"\\udfff": 1}', b'["ok", {"k": "\\ud83d"}]',
    b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "NaN",
]

BAD: list[bytes | str] = [
    b"", b"{", b"{'a': 1}", b"[1,]", b"\xff\xfe", b'{"a": 1} x', b"nul",
    "\ufeff{}",  # json.loads refuses a BOM in a str
]


def same(left: Any, right: Any) -> bool:
    """Equal, with the same types all the way down (1 is not 1.0), NaN equal to NaN."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, dict):
        return list(left) == list(right) and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)


@pytest.mark.parametrize("raw", EDGE_CASES)
def test_edge_cases_decode_as_json_loads_does(raw: bytes) -> None:
    assert same(decode_json(raw), json.loads(raw))
    text = raw.decode("utf-8", "surrogatepass")
    if not text.startswith("\ufeff"):  # json.loads refuses a BOM in a str; so must we
        assert same(decode_json(text), json.loads(text))


@pytest.mark.parametrize("raw", BAD)
def test_bad_input_raises_what_json_loads_raises(raw: bytes | str) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(raw)
    with pytest.raises(ValueError) as got:
        decode_json(raw)
    assert type(got.value) is type(expected.value)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2**70), 2**70) if rng.random() < 0.2 else rng.randint(-1000, 10**6)
    if kind == 3:
        return rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-300, 300)
    if kind in (4, 5):
        alphabet = 'abcXYZ019 "\\/\n\t\u00e9\u20ac\U0001f600\x00\x1f'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if kind in (6, 7):
        return {f"k{rng.randrange(50)}": _random_value(rng, depth + 1)
                for _ in range(rng.randrange(6))}
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(6))]


def test_random_documents_decode_as_json_loads_does() -> None:
    rng = random.Random(20261203)
    for _ in range(3000):
        value = _random_value(rng)
        raw = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]))
        for form in (raw, raw.encode()):
            assert same(decode_json(form), json.loads(form)), form


@pytest.mark.parametrize("raw", NOT_RFC_8259, ids=lambda r: repr(r[:20]))
def test_what_rfc_8259_forbids_is_refused_as_invalid_json(raw: bytes | str) -> None:
    with pytest.raises(ValueError):
        decode_json(raw)


def test_a_surrogate_pair_escape_is_one_character_not_a_lone_surrogate() -> None:
    assert decode_json(b'["\\ud83d\\ude00", 1.5]') == ["\U0001f600", 1.5]
