"""Config loading: ${ENV} and credentials, and errors that name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write

from ccbus.config.file import ConfigErrors, load_config
from ccbus.errors import ConfigError
from ccbus.plugins import PluginHost


def test_valid_config_resolves_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "etc" / "ccbus.yaml",
        """
        rules: [rules, more/rules.yaml]
        state_dir: state
        http: {listen: "127.0.0.1:0"}
        targets: {ops: "json://127.0.0.1:9/x"}
    """,
    )
    loaded = load_config(path)
    assert loaded.rule_paths == [tmp_path / "etc" / "rules", tmp_path / "etc" / "more/rules.yaml"]
    assert loaded.state_dir == tmp_path / "etc" / "state"
    assert loaded.config.http.port == 0
    assert loaded.config.targets["ops"].startswith("json://")


def test_env_expansion_defaults_and_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        targets:
          ops: "slack://${SLACK_TOKEN}/#ops"
          dev: "json://${DEV_HOST:-127.0.0.1}/hook"
    """,
    )
    loaded = load_config(path, environ={"SLACK_TOKEN": "xoxb-very-secret"})
    assert loaded.config.targets["ops"] == "slack://xoxb-very-secret/#ops"
    assert loaded.config.targets["dev"] == "json://127.0.0.1/hook"
    assert "xoxb-very-secret" in loaded.secrets


def test_missing_env_variable_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        targets:
          ops: "slack://${SLACK_TOKEN}/#ops"
    """,
    )
    with pytest.raises(ConfigErrors) as caught:
        load_config(path, environ={})
    message = str(caught.value.errors[0])
    assert message.startswith(f"{path}:2:3: targets.ops:")
    assert "SLACK_TOKEN is not set" in message


def test_systemd_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    write(creds / "slack-url", "slack://T0/B0/XYZ\n")
    path = write(tmp_path / "c.yaml", 'targets: {ops: "${credential:slack-url}"}\n')
    loaded = load_config(path, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert loaded.config.targets["ops"] == "slack://T0/B0/XYZ"
    assert "slack://T0/B0/XYZ" in loaded.secrets
    with pytest.raises(ConfigErrors, match="needs \\$CREDENTIALS_DIRECTORY"):
        load_config(path, environ={})


def test_misspelt_top_level_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        sources: {}
        state_dri: /var/lib/ccbus
    """,
    )
    with pytest.raises(ConfigErrors) as caught:
        load_config(path)
    assert str(caught.value.errors[0]) == (
        f"{path}:2:1: unknown key 'state_dri' (did you mean 'state_dir'?)"
    )


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "sources:\n  a: [1, 2\nrules: x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:3:")
    assert "invalid YAML" in str(caught.value)


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "state_dir: a\nstate_dir: b\n")
    with pytest.raises(
        ConfigError, match="duplicate key 'state_dir' \\(first defined on line 1\\)"
    ):
        load_config(path)


def test_plugin_options_are_checked_by_the_plugins_schema(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        sources:
          old-calls:
            plugin: replay
            options:
              paht: calls.jsonl
          web:
            plugin: webhok
    """,
    )
    problems = [str(p) for p in PluginHost(autoload=False).check_sources(load_config(path))]
    assert (
        f"{path}:5:7: sources.old-calls.options: unknown key 'paht' (did you mean 'path'?)"
        in problems
    )
    assert any(p.startswith(f"{path}:4:") and "missing required key 'path'" in p for p in problems)
    assert (
        f"{path}:7:5: sources.web: unknown source plugin 'webhok' (did you mean 'webhook'?)"
        in problems
    )


def test_wrong_value_type_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "http: {listen: 8787}\ndedup_window: soon\n")
    with pytest.raises(ConfigErrors) as caught:
        load_config(path)
    messages = [str(e) for e in caught.value.errors]
    assert any(m.startswith(f"{path}:1:8: http.listen:") for m in messages), messages
    assert any(m.startswith(f"{path}:2:1: dedup_window: not a duration: 'soon'") for m in messages)


def test_yaml_12_booleans_keep_on_and_no_as_text(tmp_path: Path) -> None:
    from ccbus.config.yamlfile import load_yaml

    doc = load_yaml(write(tmp_path / "x.yaml", "on: call.*\nstate: no\nflag: true\n"))
    assert doc == {"on": "call.*", "state": "no", "flag": True}


def test_named_secrets_reach_rules_and_are_redacted(tmp_path: Path) -> None:
    from ccbus.errors import EvaluationError
    from ccbus.rules.testing import ManualClock
    from ccbus.runtime.bus import make_compiler

    path = write(tmp_path / "c.yaml", 'secrets: {crm: "${CRM_KEY}", pin: "1234"}\n')
    loaded = load_config(path, environ={"CRM_KEY": "k3y-from-env"})
    assert {"k3y-from-env", "1234"} <= loaded.secrets  # even a short one is redacted
    compiler = make_compiler(PluginHost(autoload=False), ManualClock(0), loaded.config.secrets)
    assert compiler.template("sha={secret('crm')}").render({}, None) == "sha=k3y-from-env"
    with pytest.raises(EvaluationError, match="no secret named 'nope' \\(known: crm, pin\\)"):
        compiler.expression("secret('nope')").evaluate({}, None)


# -- commands that read the config: `ccbus try` and `ccbus dead-letters` ------------


def test_try_with_a_config_gives_rules_its_secrets_and_masks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from ccbus.cli.app import cli

    monkeypatch.setenv("CRM_KEY", "k3y-from-env")
    write(tmp_path / "rules" / "r.yaml", """
        rules:
          - name: signed
            on: crm.*
            if: secret('crm') != ''
            do: [log: "ticket {ticket} sig={secret('crm')}"]
    """)
    config = write(tmp_path / "ccbus.yaml", 'secrets: {crm: "${CRM_KEY}"}\nrules: [rules]\n')
    event = write(tmp_path / "e.json", '{"type": "crm.TicketOpened", "data": {"ticket": "T-1"}}')
    result = CliRunner().invoke(
        cli, ["try", "--event", str(event), "-c", str(config)],
        obj={"plugins": PluginHost(autoload=False)},
    )
    assert result.exit_code == 0, result.output
    assert "signed (" in result.output and "condition true" in result.output, result.output
    # shown as the reference the outbox would record
    assert "would call log(message='ticket T-1 sig=${secret:crm}')" in result.output, result.output
    assert "no secret named" not in result.output and "k3y-from-env" not in result.output


def test_dead_letters_need_only_the_state_dir_not_the_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin's shell has no $CREDENTIALS_DIRECTORY; the bus need not be running."""
    from click.testing import CliRunner

    from ccbus.cli.app import cli
    from ccbus.delivery.store import Pending, SqliteDeliveryStore

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("CCBUS_STATE", str(tmp_path / "var"))
    config = write(tmp_path / "ccbus.yaml", """
        state_dir: ${CCBUS_STATE}/ccbus
        targets: {ops: "${credential:slack-url}"}
        secrets: {crm: "${credential:crm-hmac}"}
        sources:
          crm: {plugin: webhook, options: {hmac_secret: "${credential:crm-hmac}"}}
    """)
    with pytest.raises(ConfigErrors, match="needs \\$CREDENTIALS_DIRECTORY"):
        load_config(config)  # what `ccbus run` needs, and what dead-letters must not
    assert load_config(config, only={"state_dir"}).state_dir == tmp_path / "var" / "ccbus"

    (tmp_path / "var" / "ccbus").mkdir(parents=True)
    store = SqliteDeliveryStore(tmp_path / "var" / "ccbus" / "delivery.sqlite3")
    row = Pending(key="e1:notify-ops:0", rule="notify-ops", action="notify", index=0,
                  lane="notify", params="", event='{"type": "x"}', created=0.0)
    store.bury_unrendered(row, "parameters did not render: no field 'queue'")
    store.close()

    runner = CliRunner()
    host = PluginHost(autoload=False)
    result = runner.invoke(cli, ["dead-letters", "list", "-c", str(config)], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert "notify-ops  notify  attempts=0  parameters did not render" in result.output
    assert "1 dead letter(s); 0 call(s) pending" in result.output
    result = runner.invoke(cli, ["dead-letters", "purge", "--all", "-c", str(config)],
                           obj={"plugins": host})
    assert result.exit_code == 0 and "1 dead letter(s) purged" in result.output, result.output
