"""The demo event files load on the bus and their canonical events follow the catalogue.

Each file in ``ccbus/cli/demo/events`` is one vendor's story in JSON Lines: native
events (``<vendor>.<native name>``) each followed by the canonical events the
vendor plugin would emit for it (bare names from ``CANONICAL_EVENTS``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ccbus.events.envelope import CANONICAL_EVENTS, Event, parse_timestamp

EVENTS_DIR = Path(__file__).resolve().parents[1] / "ccbus" / "cli" / "demo" / "events"
VENDORS = ("cvp", "genesys", "enreach", "avaya", "cucm")
ENVELOPE_KEYS = {"type", "id", "time", "subject", "vendor", "data"}
OPTIONAL_KEYS = {"source"}
#: Demo stories are set in late 2026.
WINDOW = (datetime(2026, 9, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def _lines(vendor: str) -> list[tuple[int, dict[str, Any]]]:
    path = EVENTS_DIR / f"{vendor}.jsonl"
    docs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"{path.name}:{number}: blank line"
        doc = json.loads(line)
        assert isinstance(doc, dict), f"{path.name}:{number}: not a JSON object"
        docs.append((number, doc))
    return docs


def _is_canonical(doc: dict[str, Any]) -> bool:
    return doc["type"] in CANONICAL_EVENTS


def _type_ok(value: Any, type_name: str) -> bool:
    if type_name == "str":
        return isinstance(value, str) and value != ""
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    raise AssertionError(f"catalogue uses a type this test does not know: {type_name}")


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_vendor_file_exists(vendor: str) -> None:
    path = EVENTS_DIR / f"{vendor}.jsonl"
    assert path.is_file(), f"missing demo file {path}"
    assert any(_is_canonical(doc) for _, doc in _lines(vendor)), f"{path.name}: no canonical event"


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_line_loads_as_an_event(vendor: str) -> None:
    docs = _lines(vendor)
    assert docs, f"{vendor}.jsonl is empty"
    for number, doc in docs:
        where = f"{vendor}.jsonl:{number}"
        event = Event.from_dict(doc, default_source="demo")
        assert event.type == doc["type"], where
        assert event.id == doc["id"], where
        assert event.vendor == vendor, where
        assert event.data == doc["data"], where
        assert event.subject == doc["subject"], where
        # The envelope time is a real, plausible time, not the receive-time fallback.
        assert event.time == parse_timestamp(doc["time"]), where
        assert WINDOW[0] <= event.time < WINDOW[1], where
        assert isinstance(doc["time"], str), where
        assert doc["time"].endswith("Z"), where
        assert event.extensions == {}, f"{where}: unexpected top-level keys {event.extensions}"


@pytest.mark.parametrize("vendor", VENDORS)
def test_envelopes_are_complete_and_consistent(vendor: str) -> None:
    docs = _lines(vendor)
    ids: set[str] = set()
    previous_time: datetime | None = None
    for number, doc in docs:
        where = f"{vendor}.jsonl:{number}"
        keys = set(doc)
        assert keys >= ENVELOPE_KEYS, f"{where}: missing {sorted(ENVELOPE_KEYS - keys)}"
        unknown = keys - ENVELOPE_KEYS - OPTIONAL_KEYS
        assert not unknown, f"{where}: unexpected keys {sorted(unknown)}"
        assert doc["vendor"] == vendor, where
        assert isinstance(doc["subject"], str), where
        assert doc["subject"], where
        assert isinstance(doc["data"], dict), where
        assert doc["data"], where
        assert doc["id"] not in ids, f"{where}: duplicate id {doc['id']}"
        ids.add(doc["id"])
        if not _is_canonical(doc):
            assert doc["type"].startswith(f"{vendor}."), f"{where}: native type {doc['type']}"
            assert len(doc["type"]) > len(vendor) + 1, where
        moment = parse_timestamp(doc["time"])
        assert moment is not None, where
        if previous_time is not None:
            assert moment >= previous_time, f"{where}: time goes backwards"
        previous_time = moment


@pytest.mark.parametrize("vendor", VENDORS)
def test_canonical_events_follow_the_catalogue(vendor: str) -> None:
    docs = _lines(vendor)
    canonical_count = 0
    last_native: dict[str, Any] | None = None
    for number, doc in docs:
        where = f"{vendor}.jsonl:{number}"
        if not _is_canonical(doc):
            assert "." in doc["type"], f"{where}: {doc['type']} is neither native nor canonical"
            last_native = doc
            continue
        canonical_count += 1
        spec = CANONICAL_EVENTS[doc["type"]]
        data = doc["data"]
        fields = {f.name: f for f in spec.fields}

        missing = [f.name for f in spec.fields if f.required and f.name not in data]
        assert not missing, f"{where}: {doc['type']} lacks required {missing}"
        extra = set(data) - set(fields) - {"nativeType"}
        assert not extra, f"{where}: {doc['type']} has fields outside the catalogue: {extra}"
        for name, value in data.items():
            if name in fields:
                assert _type_ok(value, fields[name].type), (
                    f"{where}: {name}={value!r} is not a {fields[name].type}")

        assert doc["subject"] == data[spec.key], f"{where}: subject is not the {spec.key}"

        # A canonical event comes right after the native event it was derived from
        # (possibly after other canonical events derived from the same native one).
        assert last_native is not None, f"{where}: canonical event before any native one"
        assert data.get("nativeType") == last_native["type"], (
            f"{where}: nativeType {data.get('nativeType')!r} != {last_native['type']!r}")
        assert doc["id"] != last_native["id"], where
        assert doc["id"].startswith(last_native["id"]), where
        assert doc["time"] == last_native["time"], where
    assert canonical_count >= 1, f"{vendor}.jsonl has no canonical events"


def test_demo_covers_the_main_canonical_events() -> None:
    seen: dict[str, set[str]] = {}
    for vendor in VENDORS:
        for _, doc in _lines(vendor):
            if _is_canonical(doc):
                seen.setdefault(doc["type"], set()).add(vendor)
    for needed in ("call.started", "call.ended", "call.abandoned", "agent.state_changed"):
        assert needed in seen, f"no vendor emits {needed}"
    assert {"system.alert", "device.status_changed"} <= set(seen)
    cvp = [doc for _, doc in _lines("cvp")]
    assert any(d["type"] == "system.alert" and d["data"]["severity"] == "critical" for d in cvp)
    assert any(d["type"] == "cvp.system.threshold_exceeded" for d in cvp)
    assert any(d["type"] == "device.status_changed" for d in cvp)
    assert any(
        doc["data"].get("state") == "not_ready"
        for vendor in VENDORS
        for _, doc in _lines(vendor)
        if doc["type"] == "agent.state_changed"
    )
