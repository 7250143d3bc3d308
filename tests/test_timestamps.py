"""``parse_timestamp``: every timestamp style the vendor documents show, and the edges.

The first group uses values copied literally from the vendor documents in
``/work/shared/vendor-docs`` (Enreach RTE, Avaya AXP); the CVP AsyncAPI only
says ``format: date-time``, and the Genesys and CUCM documents show no
timestamp values at all.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from ccbus.events.envelope import parse_timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _check(value: Any, expected: datetime | None, **kwargs: str) -> None:
    result = parse_timestamp(value, **kwargs)
    assert result == expected
    if expected is not None:
        assert result is not None
        assert result.tzinfo is UTC, "results are always aware datetimes in UTC"


# --------------------------------------------------------------------------
# Literal values from the vendor documents


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Enreach RTE, MessageReceived example: .NET round-trip format, seven
        # fraction digits. The seventh digit is cut off (truncated, not rounded).
        ("2023-10-19T14:21:19.7009158Z", utc(2023, 10, 19, 14, 21, 19, 700915)),
        # Enreach RTE, "Timestamp" in every per-event example payload.
        ("2020-01-01T12:00:00Z", utc(2020, 1, 1, 12, 0, 0)),
        # Enreach RTE, StartTime/EndTime/Modified/CreationTime/Expires/
        # ConnectedToAgentTime: .NET DateTime.MinValue, meaning "not set".
        ("0001-01-01T00:00:00", None),
        # Avaya AXP, subscription response createdAt / expiresAt.
        ("2020-08-01T14:25:23.162Z", utc(2020, 8, 1, 14, 25, 23, 162000)),
        ("2020-08-01T15:25:23.177Z", utc(2020, 8, 1, 15, 25, 23, 177000)),
        # Avaya AXP, notification sentAt.
        ("2020-08-24T08:20:23.395Z", utc(2020, 8, 24, 8, 20, 23, 395000)),
        # Avaya AXP, body.timestamp in every example: Java's Long.MAX_VALUE
        # rendered as a JSON double, i.e. "never"; as an int, a string, a float.
        (9223372036854776000, None),
        ("9223372036854776000", None),
        (9.223372036854776e18, None),
    ],
)
def test_literal_vendor_document_values(value: Any, expected: datetime | None) -> None:
    _check(value, expected)


def test_avaya_sentinel_as_json_decodes_it() -> None:
    body = json.loads('{"event": "AgentState", "timestamp": 9223372036854776000}')
    assert isinstance(body["timestamp"], int)
    assert parse_timestamp(body["timestamp"]) is None
    assert parse_timestamp(body["timestamp"], unit="ms") is None
    assert parse_timestamp(body["timestamp"], unit="s") is None


@pytest.mark.parametrize(
    "value",
    [
        # Avaya AXP ids made only of digits: dialogId (UCID), providerEngagementId,
        # providerDialogId. They must not be mistaken for epoch times.
        "01005000281645486013",
        "00001084011532384922",
        "00001000321636990744",
        # Enreach RTE phone-number placeholder.
        "+123457890123",
        # Enreach example placeholders for strings.
        "Example Value",
    ],
)
def test_id_like_and_placeholder_document_values_are_not_times(value: str) -> None:
    assert parse_timestamp(value) is None


def test_dotnet_datetime_maxvalue_means_never() -> None:
    # Enreach UserAvailability.EndTime is "DateTime.MaxValue if the state is
    # continuous"; this is how .NET writes that value.
    assert parse_timestamp("9999-12-31T23:59:59.9999999") is None
    assert parse_timestamp("9999-12-31T23:59:59.9999999Z") is None
    assert parse_timestamp("9999-12-31T23:59:59.9999999-05:00") is None


# --------------------------------------------------------------------------
# ISO 8601 variants


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-03T10:00:00+02:00", utc(2026, 11, 3, 8, 0, 0)),
        ("2026-11-03T10:00:00-05:30", utc(2026, 11, 3, 15, 30, 0)),
        ("2026-11-03T10:00:00.123+02:00", utc(2026, 11, 3, 8, 0, 0, 123000)),
        ("2026-11-03T10:00:00.1234567+02:00", utc(2026, 11, 3, 8, 0, 0, 123456)),
        ("2026-11-03T10:00:00+0200", utc(2026, 11, 3, 8, 0, 0)),
        ("2026-11-03T00:30:00+01:00", utc(2026, 11, 2, 23, 30, 0)),  # crosses midnight
        ("2026-11-03T10:00:00+00:00", utc(2026, 11, 3, 10, 0, 0)),
    ],
)
def test_offsets_are_converted_to_utc(value: str, expected: datetime) -> None:
    _check(value, expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-03T10:00:00", utc(2026, 11, 3, 10, 0, 0)),
        ("2026-11-03 10:00:00", utc(2026, 11, 3, 10, 0, 0)),
        ("2026-11-03T10:00:00.5", utc(2026, 11, 3, 10, 0, 0, 500000)),
        ("2026-11-04T08:01:35", utc(2026, 11, 4, 8, 1, 35)),
        ("2026-11-03", utc(2026, 11, 3)),
    ],
)
def test_no_zone_is_taken_as_utc(value: str, expected: datetime) -> None:
    _check(value, expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-03T10:00:00Z", utc(2026, 11, 3, 10, 0, 0)),
        ("2026-11-03T10:00:00z", utc(2026, 11, 3, 10, 0, 0)),
        ("2026-11-03T10:00:00.1Z", utc(2026, 11, 3, 10, 0, 0, 100000)),
        ("2026-11-03T10:00:00.123Z", utc(2026, 11, 3, 10, 0, 0, 123000)),
        ("2026-11-03T10:00:00.123456Z", utc(2026, 11, 3, 10, 0, 0, 123456)),
        ("2026-11-04T08:00:02.1034521Z", utc(2026, 11, 4, 8, 0, 2, 103452)),
        ("2026-11-03T10:00:00.123456789Z", utc(2026, 11, 3, 10, 0, 0, 123456)),
        ("  2026-11-03T10:00:00Z  ", utc(2026, 11, 3, 10, 0, 0)),
        ("20261103T100000Z", utc(2026, 11, 3, 10, 0, 0)),
        ("2026-11-03T10:00:00,123Z", utc(2026, 11, 3, 10, 0, 0, 123000)),
    ],
)
def test_z_and_fraction_digits(value: str, expected: datetime) -> None:
    _check(value, expected)


# --------------------------------------------------------------------------
# Numbers and numeric strings

S_2026 = 1793779200  # 2026-11-04T08:00:00Z in epoch seconds
MOMENT_2026 = utc(2026, 11, 4, 8, 0, 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (S_2026, MOMENT_2026),
        (S_2026 * 1000, MOMENT_2026),
        (S_2026 * 1000 + 123, MOMENT_2026 + timedelta(milliseconds=123)),
        (str(S_2026), MOMENT_2026),
        (str(S_2026 * 1000 + 123), MOMENT_2026 + timedelta(milliseconds=123)),
        (f" {S_2026 * 1000} ", MOMENT_2026),
        ("1793779200.5", MOMENT_2026 + timedelta(milliseconds=500)),
        ("1793779200123.0", MOMENT_2026 + timedelta(milliseconds=123)),
        (float(S_2026) + 0.25, MOMENT_2026 + timedelta(milliseconds=250)),
        (float(S_2026 * 1000 + 750), MOMENT_2026 + timedelta(milliseconds=750)),
        # Avaya-style epoch millis from the demo data.
        (1793883602114, utc(2026, 11, 5, 13, 0, 2, 114000)),
    ],
)
def test_numbers_and_numeric_strings(value: Any, expected: datetime) -> None:
    _check(value, expected)


def test_auto_unit_threshold_between_seconds_and_millis() -> None:
    # Below 10**11 the number is seconds: 10**11 - 1 seconds is year 5138, implausible.
    assert parse_timestamp(10**11 - 1) is None
    # From 10**11 on it is milliseconds: 1973-03-03T09:46:40Z.
    _check(10**11, utc(1973, 3, 3, 9, 46, 40))
    _check(str(10**11), utc(1973, 3, 3, 9, 46, 40))
    # The same 2026 instant in both units.
    assert parse_timestamp(S_2026) == parse_timestamp(S_2026 * 1000) == MOMENT_2026


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (S_2026, "s", MOMENT_2026),
        (str(S_2026), "s", MOMENT_2026),
        (S_2026 + 0.5, "s", MOMENT_2026 + timedelta(milliseconds=500)),
        (S_2026 * 1000, "ms", MOMENT_2026),
        (str(S_2026 * 1000 + 1), "ms", MOMENT_2026 + timedelta(milliseconds=1)),
        # The wrong unit gives an implausible time, so None, not a wrong time.
        (S_2026, "ms", None),  # 1970-01-21
        (S_2026 * 1000, "s", None),  # year ~58800
        # Small numbers are seconds only when asked: 2 years after the epoch.
        (2 * 365 * 86400, "s", utc(1972, 1, 1)),
        (2 * 365 * 86400, "ms", None),
        # Large seconds value that auto mode would read as millis.
        (10**11, "s", None),
    ],
)
def test_explicit_unit(value: Any, unit: str, expected: datetime | None) -> None:
    _check(value, expected, unit=unit)


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, float("nan"), "NaN", "nan", "inf", "-inf", "Infinity"],
)
@pytest.mark.parametrize("unit", ["auto", "s", "ms"])
def test_nan_and_infinity(value: Any, unit: str) -> None:
    assert parse_timestamp(value, unit=unit) is None


@pytest.mark.parametrize("value", [-1, -S_2026, "-1793779200", 0, "0", -0.0, 1.5])
def test_epoch_and_before_are_implausible(value: Any) -> None:
    assert parse_timestamp(value) is None


# --------------------------------------------------------------------------
# Rejected inputs


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "garbage",
        "not a date",
        "2026-13-45T99:99:99Z",
        "2026-11-03T10:00:00+25:00",
        "12:00",
        "Z",
        "1.7e12",  # exponent notation is not a numeric string here
        "0x6AEB4C80",
        "Tue, 03 Nov 2026 10:00:00 GMT",
        "1793779200 ms",
    ],
)
def test_garbage_strings(value: str) -> None:
    assert parse_timestamp(value) is None


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("unit", ["auto", "s", "ms"])
def test_bools_are_not_numbers(value: bool, unit: str) -> None:
    assert parse_timestamp(value, unit=unit) is None


def test_none() -> None:
    assert parse_timestamp(None) is None
    assert parse_timestamp(None, unit="ms") is None


@pytest.mark.parametrize(
    "value",
    [
        [],
        {},
        # Genesys voice events carry "time" as a seconds/microseconds structure;
        # parse_timestamp does not read structures.
        {"seconds": S_2026, "useconds": 0},
        (S_2026,),
        Decimal(S_2026),
        b"2026-11-03T10:00:00Z",
        object(),
    ],
)
def test_unsupported_types(value: Any) -> None:
    assert parse_timestamp(value) is None


# --------------------------------------------------------------------------
# datetime objects


def test_aware_utc_datetime_passes_through() -> None:
    moment = utc(2026, 11, 3, 10, 0, 0, 123456)
    _check(moment, moment)


def test_aware_datetime_with_offset_is_converted() -> None:
    moment = datetime(2026, 11, 3, 10, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    _check(moment, utc(2026, 11, 3, 8, 0, 0))


def test_naive_datetime_is_taken_as_utc() -> None:
    _check(datetime(2026, 11, 3, 10, 0, 0), utc(2026, 11, 3, 10, 0, 0))


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime.max,
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1970, 1, 1, tzinfo=UTC),
    ],
)
def test_implausible_datetimes(value: datetime) -> None:
    assert parse_timestamp(value) is None


# --------------------------------------------------------------------------
# Plausibility window: 1971-01-01 .. 2400-01-01 inclusive


def test_window_boundaries() -> None:
    _check("1971-01-01T00:00:00Z", utc(1971, 1, 1))
    assert parse_timestamp("1970-12-31T23:59:59.999999Z") is None
    _check("2400-01-01T00:00:00Z", utc(2400, 1, 1))
    assert parse_timestamp("2400-01-01T00:00:00.000001Z") is None
    _check(365 * 86400, utc(1971, 1, 1))  # first plausible epoch second
    assert parse_timestamp(365 * 86400 - 1) is None
    # An offset can move a time across the boundary.
    assert parse_timestamp("1971-01-01T00:30:00+01:00") is None
    _check("2399-12-31T19:00:00-05:00", utc(2400, 1, 1))


# --------------------------------------------------------------------------
# Regressions: both once broke parse_timestamp


# Integers too large for a float once raised OverflowError; JSON decoders hand
# such integers over as Python ints, and no input may stop the bus.
@pytest.mark.parametrize("unit", ["auto", "s", "ms"])
@pytest.mark.parametrize(
    "value", [10**400, -(10**400), "9" * 400], ids=["10**400", "-10**400", "nines-string"]
)
def test_huge_integers_return_none(value: Any, unit: str) -> None:
    assert parse_timestamp(value, unit=unit) is None


# Epoch milliseconds once went through float seconds, so from 2242-03 on
# (where a double's step exceeds a microsecond) they came back a microsecond off.
def test_epoch_millis_are_exact_up_to_2400() -> None:
    ms = 12696638187616
    assert parse_timestamp(ms) == EPOCH + timedelta(milliseconds=ms)
    assert parse_timestamp(ms) == utc(2372, 5, 4, 19, 56, 27, 616000)


def test_integer_millis_are_exact_on_the_fast_path_and_past_it() -> None:
    """Integer milliseconds before 2038 go through a float division: it must land on
    the exact millisecond every time, as the integer path does for later ones."""
    import random

    from ccbus.events.envelope import _FLOAT_EXACT_MS

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rng = random.Random(3)
    earliest = int(datetime(1971, 1, 1, tzinfo=UTC).timestamp()) * 1000
    samples = [earliest, _FLOAT_EXACT_MS - 1, _FLOAT_EXACT_MS, _FLOAT_EXACT_MS + 1]
    samples += [rng.randrange(earliest, _FLOAT_EXACT_MS) for _ in range(20_000)]
    samples += [rng.randrange(_FLOAT_EXACT_MS, 13_000_000_000_000) for _ in range(2_000)]
    for millis in samples:
        assert parse_timestamp(millis, unit="ms") == epoch + timedelta(milliseconds=millis), millis
