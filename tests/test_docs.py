"""The docs are tested: rule examples run, and reference tables cover everything."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from support import REPO

from ccbus.events.envelope import CANONICAL_EVENTS
from ccbus.plugins import PluginHost
from ccbus.rules.expressions import ExpressionCompiler
from ccbus.rules.functions import build_library
from ccbus.rules.loader import load_rules
from ccbus.rules.testing import ManualClock, run_file_tests
from ccbus.runtime.bus import make_compiler

RULES_DOC = REPO / "docs" / "rules.md"
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def rule_examples() -> list[tuple[int, str]]:
    text = RULES_DOC.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 2, m.group(1)) for m in YAML_BLOCK.finditer(text)
            if "rules:" in m.group(1)]


@pytest.mark.parametrize(("line", "block"), rule_examples(), ids=lambda v: str(v)[:20])
def test_rule_reference_examples_load_and_pass_their_tests(tmp_path: Path, line: int,
                                                           block: str) -> None:
    path = tmp_path / f"docs-rules-md-line-{line}.yaml"
    path.write_text(block, encoding="utf-8")
    plugins = PluginHost(autoload=False)
    clock = ManualClock(0)
    ruleset = load_rules([path], actions=plugins.actions, compiler=make_compiler(plugins, clock))
    assert [str(e) for e in ruleset.errors] == []
    [rule_file] = ruleset.files
    assert rule_file.tests, f"the example at docs/rules.md:{line} has no tests"
    def compiler_for(secrets: Mapping[str, str]) -> ExpressionCompiler:
        return make_compiler(plugins, clock, secrets)

    for result in run_file_tests(rule_file, plugins.actions, clock, compiler_for=compiler_for):
        assert result.passed, (f"docs/rules.md:{line} case {result.name!r}: "
                               f"{result.failures}; calls: {result.actual}")


def test_every_library_function_is_in_the_rule_reference() -> None:
    text = RULES_DOC.read_text(encoding="utf-8")
    missing = [name for name in build_library(ManualClock(0)) if f"`{name}" not in text
               and f" {name} " not in text and f" {name}`" not in text]
    assert missing == []


def test_every_canonical_event_and_field_is_documented() -> None:
    text = (REPO / "docs" / "events.md").read_text(encoding="utf-8")
    for event in CANONICAL_EVENTS.values():
        assert f"`{event.type}`" in text
        for field in event.fields:
            assert f"`{field.name}`" in text, (event.type, field.name)


def test_shipped_rules_pass_their_tests() -> None:
    plugins = PluginHost(autoload=False)
    clock = ManualClock(0)
    ruleset = load_rules([REPO / "rules"], actions=plugins.actions,
                         compiler=make_compiler(plugins, clock))
    assert [str(e) for e in ruleset.errors] == []
    results = [r for f in ruleset.files for r in run_file_tests(f, plugins.actions, clock)]
    assert len(results) >= 10
    assert [(r.name, r.failures) for r in results if not r.passed] == []
