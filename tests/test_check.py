"""``ccbus check`` fails on everything it can know before anything connects (issue #20).

Each case is a mistake an admin makes, written as a file, checked by the real CLI:
the answer names file, line and column, and says what to do.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from support import write

from ccbus.cli.app import cli
from ccbus.plugins import PluginHost


def check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["check", *args],
                                obj={"plugins": PluginHost(autoload=False)})
    return result.exit_code, result.output


def rules(tmp_path: Path, text: str) -> Path:
    write(tmp_path / "rules" / "r.yaml", text)
    return tmp_path / "rules"


def test_a_literal_regular_expression_that_does_not_compile_is_refused_with_a_caret(
    tmp_path: Path,
) -> None:
    where = rules(tmp_path, """
        rules:
          - name: critical
            on: system.alert
            if: matches("crit(ical", severity)
            do: [log: x]
    """)
    code, out = check("--rules", str(where))
    assert code == 1
    assert f"{where}/r.yaml:4:5: rule 'critical': matches(): bad regular expression" in out
    assert "(column 9)" in out
    assert '    matches("crit(ical", severity)\n            ^' in out


def test_an_expression_syntax_error_shows_the_column_and_a_caret(tmp_path: Path) -> None:
    where = rules(tmp_path, """
        rules:
          - name: unfinished
            on: system.alert
            if: severity == "critical" and
            do: [log: x]
    """)
    code, out = check("--rules", str(where))
    assert code == 1
    assert "invalid syntax (column 27)" in out
    assert '    severity == "critical" and\n' + " " * 30 + "^" in out


def test_a_pattern_that_comes_from_the_event_is_checked_when_it_runs_not_at_load(
    tmp_path: Path,
) -> None:
    where = rules(tmp_path, """
        rules:
          - name: from-data
            on: system.alert
            if: matches(pattern, severity)
            do: [log: x]
    """)
    code, out = check("--rules", str(where))
    assert code == 0, out


def try_events(tmp_path: Path, rule_text: str, event: str) -> tuple[int, str]:
    where = rules(tmp_path, rule_text)
    events = write(tmp_path / "event.json", event)
    result = CliRunner().invoke(cli, ["try", "--event", str(events), "--rules", str(where)],
                                obj={"plugins": PluginHost(autoload=False)})
    return result.exit_code, result.output


def test_try_exits_non_zero_when_a_rule_fails_to_evaluate(tmp_path: Path) -> None:
    code, out = try_events(tmp_path, """
        rules:
          - name: divides
            on: system.alert
            if: 10 / count > 1
            do: [log: x]
    """, '{"type": "system.alert", "data": {"count": 0}}')
    assert code == 1, out
    assert "condition failed" in out and "1 failure(s)" in out


def test_try_exits_non_zero_when_an_action_fails_to_render(tmp_path: Path) -> None:
    code, out = try_events(tmp_path, """
        rules:
          - name: renders
            on: system.alert
            do: [log: "{10 / count}"]
    """, '{"type": "system.alert", "data": {"count": 0}}')
    assert code == 1, out
    assert "render error" in out


def test_try_exits_zero_when_every_rule_evaluates_even_false_or_missing_a_field(
    tmp_path: Path,
) -> None:
    code, out = try_events(tmp_path, """
        rules:
          - name: quiet
            on: system.alert
            if: severity == "critical"
            do: [log: x]
          - name: missing
            on: system.alert
            if: hostname == "x"
            do: [log: x]
    """, '{"type": "system.alert", "data": {"severity": "minor"}}')
    assert code == 0, out
    assert "condition false" in out


def test_dead_letters_options_go_before_or_after_the_subcommand(tmp_path: Path) -> None:
    from ccbus.delivery.store import SqliteDeliveryStore

    state = tmp_path / "state"
    state.mkdir()
    SqliteDeliveryStore(state / "delivery.sqlite3").close()
    config = write(tmp_path / "ccbus.yaml", f"state_dir: {state}\n")
    for args in (["dead-letters", "-c", str(config), "list"],
                 ["dead-letters", "list", "-c", str(config)],
                 ["dead-letters", "--state-dir", str(state), "list"],
                 ["dead-letters", "--state-dir", str(state), "purge", "--all"]):
        result = CliRunner().invoke(cli, args, obj={"plugins": PluginHost(autoload=False)})
        assert result.exit_code == 0, (args, result.output)
        assert "dead letter(s)" in result.output, (args, result.output)


def test_a_yaml_indentation_error_keeps_the_parser_wording_and_says_what_causes_it(
    tmp_path: Path,
) -> None:
    where = rules(tmp_path, """
        rules:
          - name: misaligned
            on: system.alert
           do: [log: x]
    """)
    code, out = check("--rules", str(where))
    assert code == 1
    assert f"{where}/r.yaml:4:4:" in out
    assert "invalid YAML: expected <block end>, but found '<block mapping start>'" in out
    assert "usually: a line is indented differently from the lines at its level" in out


def test_a_notify_target_the_config_does_not_define_fails_check(tmp_path: Path) -> None:
    rules(tmp_path, """
        rules:
          - name: page
            on: system.alert
            do:
              - notify: {to: ops-slak, body: "{severity}"}
              - notify: {to: [ops-slack, "tag:oncall", "{team}"], body: fine}
              - notify: "the default target"
    """)
    config = write(tmp_path / "ccbus.yaml", """
        targets:
          ops-slack: "json://127.0.0.1:9/hook"
    """)
    code, out = check("-c", str(config))
    assert code == 1, out
    assert (f"{tmp_path}/rules/r.yaml:5: rule 'page': notify: unknown target 'ops-slak' "
            "(did you mean 'ops-slack'?") in out
    assert "1 problem(s) found" in out


def test_an_on_typo_fails_check_with_did_you_mean_and_emits_and_declared_types_pass(
    tmp_path: Path,
) -> None:
    rules(tmp_path, """
        rules:
          - name: typo
            on: call.abandonned
            do: [log: x]
          - name: escalate
            on: call.abandoned
            do: [emit: {type: ops.escalate, data: {queue: "{queue}"}}]
          - name: emitted
            on: ops.escalate
            do: [log: x]
          - name: from-the-crm
            on: crm.Ticket*
            do: [log: x]
    """)
    config = write(tmp_path / "ccbus.yaml", """
        event_types: [crm.*]   # what the CRM posts to the webhook source
    """)
    code, out = check("-c", str(config))
    assert code == 1, out
    assert (f"{tmp_path}/rules/r.yaml:3:5: rule 'typo': on: 'call.abandonned' matches no "
            "event type a plugin, the catalogue or an emit produces "
            "(did you mean 'call.abandoned'?") in out
    assert "1 problem(s) found" in out


def test_a_field_typo_is_a_warning_with_did_you_mean_not_an_error(tmp_path: Path) -> None:
    where = rules(tmp_path, """
        rules:
          - name: hostname-typo
            on: system.alert
            if: severity == "critical"
            do: [log: "{hostnme} is down"]
    """)
    code, out = check("--rules", str(where))
    assert code == 0, out
    assert ("warning: " + f"{where}/r.yaml:2: rule 'hostname-typo' reads 'hostnme', a field "
            "none of its event types declares") in out
