"""The expression sandbox holds: every attempt in ``tests/sandbox/corpus.yaml`` fails, fast.

Each corpus entry must fail the way it says (``syntax``: refused at compile
time; ``eval``: compiles, then evaluate/render raises ``EvaluationError``),
with a one-line message, within one second, without touching the event.

Entries marked ``known_issue`` are real holes that are not fixed yet.  They
run in a child process (killed after ``CHILD_TIMEOUT`` seconds, with a
memory cap) under ``xfail(strict=True)``, so a fix shows up as an XPASS
failure and the marker must then be removed from the corpus.

Run this file as a script with ``--child`` to evaluate one entry read as
JSON from stdin (that is how the known issues are run).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccbus.errors import EvaluationError, ExpressionSyntaxError
from ccbus.events.envelope import Event
from ccbus.rules.expressions import EnvelopeView, ExpressionCompiler
from ccbus.rules.functions import SystemClock, build_library

CORPUS_PATH = Path(__file__).resolve().parent / "sandbox" / "corpus.yaml"
TIME_LIMIT = 1.0  # seconds per entry: a safety limit, not a benchmark
CHILD_TIMEOUT = 3.0  # a known issue still running after this is killed
CHILD_MEMORY = 2 * 1024**3  # address-space cap for the child, in bytes

DEFAULT_DATA: dict[str, Any] = {
    "x": 1,
    "name": "Alice",
    "count": 3,
    "items": [1, 2, 3],
    "caller": {"number": "+31201234567", "name": "Bob"},
    "data": {"a": {"b": 2}},
    "a": {"b": 5},
    "tags": ["vip", "nl"],
}

REQUIRED_CATEGORIES = {
    "dunder",
    "getattr",
    "underscore",
    "builtins",
    "format",
    "power",
    "huge_string",
    "huge_int",
    "shift",
    "nesting",
    "long",
    "comprehension",
    "lambda",
    "walrus",
    "unpacking",
    "mutation",
    "regex",
    "wrong_type",
    "function_attr",
    "modules",
    "literal",
    "slicing",
    "cumulative",
}


def load_corpus() -> list[dict[str, Any]]:
    doc = yaml.safe_load(CORPUS_PATH.read_text(encoding="utf-8"))
    entries: list[dict[str, Any]] = doc["entries"]
    return entries


def source_of(entry: dict[str, Any]) -> tuple[str, str]:
    """``(kind, text)``: kind is ``expr`` or ``template``."""
    for kind in ("expr", "template"):
        if kind in entry:
            return kind, entry[kind]
        parts = entry.get(f"{kind}_parts")
        if parts is not None:
            return kind, "".join(text * count for text, count in parts)
    raise KeyError(f"corpus entry has no expr/template: {entry!r}")


def make_compiler() -> ExpressionCompiler:
    return ExpressionCompiler(build_library(SystemClock()))


def make_event(data: dict[str, Any] | None = None) -> Event:
    return Event(
        type="corpus.probe",
        source="tests/sandbox",
        subject="call-1",
        data=copy.deepcopy(DEFAULT_DATA if data is None else data),
        time=datetime(2026, 1, 5, 8, 0, tzinfo=UTC),
        extensions={"ext": {"k": [1, 2]}},
    )


@dataclass
class Outcome:
    """How one attempt ended: ``syntax``, ``eval``, ``ok`` (no error) or ``other``."""

    kind: str
    error_type: str
    message: str
    elapsed: float
    data_changed: bool


def attempt(
    compiler: ExpressionCompiler, entry: dict[str, Any], event: Event | None = None
) -> Outcome:
    """Compile and run one corpus entry against ``event`` (a fresh one by default)."""
    event = event if event is not None else make_event(entry.get("data"))
    before = copy.deepcopy((event.data, event.extensions))
    envelope = EnvelopeView(event) if entry.get("envelope", True) else None
    kind, text = source_of(entry)
    error: BaseException | None = None
    start = time.perf_counter()
    try:
        if kind == "template":
            compiler.template(text).render(event.data, envelope)
        else:
            compiler.expression(text).evaluate(event.data, envelope)
        result = "ok"
    except ExpressionSyntaxError as err:
        result, error = "syntax", err
    except EvaluationError as err:
        # Compile errors are ExpressionSyntaxError, so this came from evaluation.
        result, error = "eval", err
    except Exception as err:  # anything else escaping the sandbox is a failure
        result, error = "other", err
    elapsed = time.perf_counter() - start
    changed = copy.deepcopy((event.data, event.extensions)) != before
    if error is None:
        return Outcome(result, "", "", elapsed, changed)
    return Outcome(result, type(error).__name__, str(error), elapsed, changed)


def check(entry: dict[str, Any], outcome: Outcome) -> None:
    """The assertions every corpus entry must pass."""
    expect = entry["expect"]
    wanted = "ExpressionSyntaxError" if expect == "syntax" else "EvaluationError"
    assert outcome.kind == expect, (
        f"expected {wanted}, got {outcome.kind} "
        f"({outcome.error_type}: {outcome.message[:300]}) after {outcome.elapsed:.3f}s"
    )
    assert outcome.message.strip(), "the error message is empty"
    assert "\n" not in outcome.message and "\r" not in outcome.message, (
        f"the error message is not one line: {outcome.message[:300]!r}"
    )
    assert outcome.elapsed < TIME_LIMIT, f"took {outcome.elapsed:.3f}s (limit {TIME_LIMIT}s)"
    assert not outcome.data_changed, "the attempt modified the event's data"


def run_in_child(entry: dict[str, Any]) -> Outcome:
    """Run ``attempt`` in a fresh interpreter with a time and memory cap."""
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child"],
            input=json.dumps(entry),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        proc = None  # subprocess.run has killed the child
    if proc is None:
        pytest.fail(f"still running after {CHILD_TIMEOUT}s: killed")
    if proc.returncode != 0:
        pytest.fail(f"child process failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return Outcome(**json.loads(proc.stdout))


def _child_main() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    entry = json.loads(sys.stdin.read())
    outcome = attempt(make_compiler(), entry)
    outcome.message = outcome.message[:2000]
    sys.stdout.write(json.dumps(outcome.__dict__))


# ---------------------------------------------------------------------------
# The corpus

CORPUS = load_corpus()


def _param(index: int, entry: dict[str, Any]) -> Any:
    marks = []
    if entry.get("known_issue"):
        marks.append(pytest.mark.xfail(strict=True, reason=entry["known_issue"]))
    return pytest.param(entry, id=f"{entry['category']}-{index:03d}", marks=marks)


@pytest.fixture(scope="module")
def compiler() -> ExpressionCompiler:
    """Built-in library only (overrides the conftest fixture, which adds plugins)."""
    return make_compiler()


def test_corpus_is_well_formed() -> None:
    assert len(CORPUS) >= 80
    allowed = {
        "category",
        "why",
        "expect",
        "expr",
        "template",
        "expr_parts",
        "template_parts",
        "data",
        "envelope",
        "known_issue",
    }
    for entry in CORPUS:
        assert set(entry) <= allowed, f"unknown keys in {entry!r}"
        assert entry["expect"] in ("syntax", "eval"), entry
        assert isinstance(entry["category"], str) and entry["category"], entry
        assert isinstance(entry["why"], str) and entry["why"].strip(), entry
        sources = [k for k in ("expr", "template", "expr_parts", "template_parts") if k in entry]
        assert len(sources) == 1, f"need exactly one source in {entry!r}"
        kind, text = source_of(entry)
        assert isinstance(text, str), entry
    assert REQUIRED_CATEGORIES <= {e["category"] for e in CORPUS}
    assert len({source_of(e) for e in CORPUS}) == len(CORPUS), "duplicate corpus entries"


@pytest.mark.parametrize("entry", [_param(i, e) for i, e in enumerate(CORPUS)])
def test_escape_attempt_fails(compiler: ExpressionCompiler, entry: dict[str, Any]) -> None:
    if entry.get("known_issue"):
        outcome = run_in_child(entry)
    else:
        outcome = attempt(compiler, entry)
    check(entry, outcome)


def test_corpus_never_modifies_a_shared_event(compiler: ExpressionCompiler) -> None:
    """Run every corpus entry against one event; its data must be untouched.

    Known issues are left out (they may not finish); ``attempt`` checks each
    of them against its own event in the child process instead.
    """
    event = make_event()
    pristine = copy.deepcopy((event.data, event.extensions, event.type, event.subject))
    for entry in CORPUS:
        if entry.get("known_issue") or "data" in entry:
            continue
        attempt(compiler, entry, event)
        assert (
            copy.deepcopy((event.data, event.extensions, event.type, event.subject)) == pristine
        ), f"modified by {source_of(entry)[1][:200]!r}"


# ---------------------------------------------------------------------------
# Legitimate expressions still work


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x == 1", True),
        ("count >= 3 and name != 'Bob'", True),
        ("not (x > 1 or count < 3)", True),
        ("1 < count <= 3", True),
        ("2 in items", True),
        ("'vip' in tags and 'us' not in tags", True),
        ("count * 2 + 1", 7),
        ("count ** 2 - x", 8),
        ("count / 2", 1.5),
        ("count // 2", 1),
        ("count % 2", 1),
        ("1 << 4", 16),
        ("name.lower()", "alice"),
        ("name.upper().startswith('AL')", True),
        ("'a-b'.replace('-', '+')", "a+b"),
        ("', '.join(tags)", "vip, nl"),
        ("get(event.data, 'a.b', 0)", 5),
        ("get(event.data, 'a.c', 0)", 0),
        ("get(event.data, 'items.1')", 2),
        ("has(event.data, 'caller.number')", True),
        ("matches('^\\\\+31', caller.number)", True),
        ("extract('\\\\d{2}', caller.number)", "31"),
        ("caller.number", "+31201234567"),
        ("a.b", 5),
        ("data.a.b", 2),
        ("event.data.caller.name", "Bob"),
        ("name[1:3]", "li"),
        ("items[-1]", 3),
        ("items[::2]", [1, 3]),
        ("'yes' if count > 2 else 'no'", "yes"),
        ("len(items) + sum(items) + max(items)", 12),
        ("sorted(items, reverse=True)", [3, 2, 1]),
        ("coalesce(None, '', 'x')", "x"),
        ("{'k': [1, 2]}['k'][1]", 2),
        ("str(count) + '!'", "3!"),
        ("'%d' if x else 'y'", "%d"),
        ("2 ** 10", 1024),
        # guards that must not get in the way of ordinary use
        ("matches('(a+)+$', 'a' * 50 + '!')", False),  # regex's engine, not a stall
        ("round(2.567, 2)", 2.57),
        ("1" + "+1" * 40, 41),
        ("len(split('a b c'))", 3),
        ("sub('-', '', '+31-20-555')", "+3120555"),
    ],
)
def test_legitimate_expression(compiler: ExpressionCompiler, source: str, expected: Any) -> None:
    event = make_event()
    assert compiler.expression(source).evaluate(event.data, EnvelopeView(event)) == expected


def test_envelope_fields(compiler: ExpressionCompiler) -> None:
    event = make_event()
    view = EnvelopeView(event)

    def run(source: str) -> Any:
        return compiler.expression(source).evaluate(event.data, view)

    assert run("event.type") == "corpus.probe"
    assert run("event.subject") == "call-1"
    assert run("event.source") == "tests/sandbox"
    assert run("event.data") == DEFAULT_DATA
    assert run("event.data['caller']['number']") == "+31201234567"
    assert run("event.time.hour") == 8
    assert run("event.type.startswith('corpus.')") is True


def test_the_whole_event_renders_as_cloudevents_json(compiler: ExpressionCompiler) -> None:
    import json

    event = make_event()
    view = EnvelopeView(event)
    rendered = compiler.template("{text(event)}").render(event.data, view)
    document = json.loads(rendered)
    assert document["type"] == "corpus.probe" and document["specversion"] == "1.0"
    assert "0x" not in compiler.template("event: {event}").render(event.data, view)


def test_templates(compiler: ExpressionCompiler) -> None:
    event = make_event()
    view = EnvelopeView(event)

    def render(source: str) -> Any:
        return compiler.template(source).render(event.data, view)

    assert render("Hello {name}, {{literal}} {count + 1}") == "Hello Alice, {literal} 4"
    assert render("{count}") == 3  # a single hole keeps the value's type
    assert render("{ {'a': 1}['a'] }") == 1
    assert render("{caller.number} ({event.type})") == "+31201234567 (corpus.probe)"
    assert render("[{get(event.data, 'nope')}]") == "[]"  # None renders as ""
    assert render("{items}!") == "[1, 2, 3]!"
    constant = compiler.template("no {{holes}} here")
    assert constant.constant
    assert constant.render(event.data, view) == "no {holes} here"


# ---------------------------------------------------------------------------
# Importing ccbus leaves simpleeval's module-level limits alone

_SNAPSHOT = """
import json, simpleeval

def canon(value):
    if isinstance(value, dict):
        return sorted([canon(k), canon(v)] for k, v in value.items())
    if isinstance(value, set | frozenset):
        return sorted(canon(v) for v in value)
    if isinstance(value, list | tuple):
        return [canon(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return repr(value)
    return getattr(value, "__qualname__", None) or type(value).__qualname__

def snapshot():
    return {n: canon(getattr(simpleeval, n)) for n in dir(simpleeval) if n.isupper()}
"""


def _snapshot_here() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(_SNAPSHOT, namespace)  # noqa: S102 - our own constant code
    return json.loads(json.dumps(namespace["snapshot"]()))


def test_importing_ccbus_leaves_simpleeval_limits_alone() -> None:
    code = (
        _SNAPSHOT
        + """
import simpleeval
before = snapshot()
limits = (simpleeval.MAX_STRING_LENGTH, simpleeval.MAX_POWER)
import ccbus, ccbus.runtime.bus, ccbus.rules.expressions, ccbus.rules.functions
compiler = ccbus.rules.expressions.ExpressionCompiler(
    ccbus.rules.functions.build_library(ccbus.rules.functions.SystemClock())
)
compiler.expression("'a' * 10 + str(2 ** 10)").evaluate({})
after = snapshot()
print(json.dumps({"before": before, "after": after, "limits": limits}))
"""
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(proc.stdout)
    assert result["before"] == result["after"]
    assert "MAX_STRING_LENGTH" in result["before"] and "MAX_POWER" in result["before"]
    # And in this process, after every test above has imported and used ccbus:
    import simpleeval

    assert [simpleeval.MAX_STRING_LENGTH, simpleeval.MAX_POWER] == result["limits"]
    assert _snapshot_here() == result["before"]


if __name__ == "__main__" and sys.argv[1:] == ["--child"]:
    _child_main()
