"""Loading rules: a bad rule is reported with file, line and reason; the rest load."""

from __future__ import annotations

from pathlib import Path

from support import write

from ccbus.plugins import PluginHost
from ccbus.rules.expressions import ExpressionCompiler
from ccbus.rules.loader import load_rules


def load(tmp_path: Path, text: str, plugins: PluginHost, compiler: ExpressionCompiler):
    path = write(tmp_path / "rules" / "r.yaml", text)
    return path, load_rules([tmp_path / "rules"], actions=plugins.actions, compiler=compiler)


def test_one_bad_rule_does_not_stop_the_others(tmp_path, plugins, compiler) -> None:
    path, ruleset = load(
        tmp_path,
        """
        rules:
          - name: good
            on: call.*
            do: [log: "{callId}"]
          - name: broken
            on: call.ended
            if: durationSeconds >
            do: [log: x]
          - name: also-good
            on: [agent.state_changed, avaya.AgentState]
            do: [log: y]
    """,
        plugins,
        compiler,
    )
    assert [r.name for r in ruleset.rules] == ["good", "also-good"]
    assert ruleset.rules[1].patterns == ("agent.state_changed", "avaya.AgentState")
    [error] = ruleset.errors
    assert str(error).startswith(f"{path}:7:5: rule 'broken': invalid syntax")
    assert "durationSeconds >" in str(error)


def test_unknown_action_names_rule_file_and_line(tmp_path, plugins, compiler) -> None:
    path, ruleset = load(
        tmp_path,
        """
        rules:
          - name: r
            on: x
            do:
              - log: fine
              - notfy: {to: ops}
    """,
        plugins,
        compiler,
    )
    [error] = ruleset.errors
    assert str(error) == f"{path}:6:9: rule 'r': unknown action 'notfy' (did you mean 'notify'?)"


def test_unknown_and_missing_action_parameters(tmp_path, plugins, compiler) -> None:
    path, ruleset = load(
        tmp_path,
        """
        rules:
          - name: a
            on: x
            do: [log: {mesage: hi}]
          - name: b
            on: x
            do: [emit: {data: {}}]
          - name: c
            on: x
            do: [log: {message: hi, level: loud}]
    """,
        plugins,
        compiler,
    )
    errors = [str(e) for e in ruleset.errors]
    assert errors[0].startswith(f"{path}:4:16: rule 'a': action 'log': unknown parameter 'mesage'")
    assert "did you mean 'message'" in errors[0]
    assert errors[1] == f"{path}:7:10: rule 'b': action 'emit': missing required parameter 'type'"
    assert errors[2].startswith(f"{path}:10:")
    assert "level" in errors[2] and "'info'" in errors[2]


def test_misspelt_rule_key_and_bad_duration(tmp_path, plugins, compiler) -> None:
    path, ruleset = load(
        tmp_path,
        """
        rules:
          - name: a
            on: x
            iff: y == 1
            do: [log: hi]
          - name: b
            on: x
            throttle: {every: 10 minutes}
            do: [log: hi]
    """,
        plugins,
        compiler,
    )
    errors = [str(e) for e in ruleset.errors]
    assert errors[0] == f"{path}:4:5: rule 'a': unknown key 'iff' (did you mean 'if'?)"
    assert errors[1].startswith(f"{path}:8:") and "not a duration: '10 minutes'" in errors[1]


def test_duplicate_rule_names_across_files(tmp_path, plugins, compiler) -> None:
    write(tmp_path / "rules" / "a.yaml", "rules: [{name: same, on: x, do: [log: a]}]\n")
    write(tmp_path / "rules" / "b.yaml", "rules: [{name: same, on: y, do: [log: b]}]\n")
    ruleset = load_rules([tmp_path / "rules"], actions=plugins.actions, compiler=compiler)
    assert [r.patterns for r in ruleset.rules] == [("x",)]
    assert "already defined at" in str(ruleset.errors[0])


def test_invalid_yaml_in_a_rule_file(tmp_path, plugins, compiler) -> None:
    path, ruleset = load(tmp_path, "rules:\n  - name: a\n    on: [x\n", plugins, compiler)
    assert str(ruleset.errors[0]).startswith(f"{path}:4:1: invalid YAML")


def test_count_and_for_cannot_be_combined(tmp_path, plugins, compiler) -> None:
    _, ruleset = load(
        tmp_path,
        """
        rules:
          - name: a
            on: x
            count: {at_least: 2, within: 1m}
            for: {duration: 1m}
            do: [log: hi]
    """,
        plugins,
        compiler,
    )
    assert "'count' and 'for' cannot be combined" in str(ruleset.errors[0])


def test_disabled_rules_are_skipped(tmp_path, plugins, compiler) -> None:
    _, ruleset = load(
        tmp_path, "rules: [{name: a, on: x, enabled: false, do: [log: a]}]\n", plugins, compiler
    )
    assert ruleset.rules == [] and ruleset.errors == []


def test_template_syntax_errors_are_load_errors(tmp_path, plugins, compiler) -> None:
    path, ruleset = load(
        tmp_path,
        """
        rules:
          - name: a
            on: x
            do: [log: "caller {caller"]
    """,
        plugins,
        compiler,
    )
    assert str(ruleset.errors[0]).startswith(f"{path}:4:10: rule 'a': action 'log': unclosed '{{'")
