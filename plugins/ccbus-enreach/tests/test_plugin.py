"""The plugin as ccbus sees it: entry point, `ccbus plugins`, `ccbus check`, rules, demo, CLI."""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import ccbus_enreach
import httpx
import pytest
import yaml
from ccbus_enreach.demo import demo_simulator, demo_source
from ccbus_enreach.options import EnreachOptions
from click.testing import CliRunner

from ccbus import load_config
from ccbus.cli.app import attach_plugins, cli, shipped_rules_dir
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

PLUGIN_RULES = Path(__file__).resolve().parent.parent / "rules"
CCBUS = Path(sys.executable).parent / "ccbus"
USER = "a1eeb030-ff4b-ea11-ac9c-00155d4fdcf3"
QUEUE = "c9eeb030-ff4b-ea11-ac9c-00155d4fdcf3"


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """Every installed plugin, found through entry points as in production."""
    host = PluginHost()
    attach_plugins(host)
    return host


def test_found_through_its_entry_point(host: PluginHost) -> None:
    assert [f for f in host.failures if f.name == "enreach"] == []
    assert host.pm.get_plugin("enreach") is ccbus_enreach
    assert host.sources["enreach"].options is EnreachOptions
    assert {"enreach.subscribe", "enreach.unsubscribe", "enreach.unsubscribe_all"} <= set(
        host.actions
    )
    assert [d.name for d in host.demo_sources() if d.plugin == "enreach"] == ["enreach-live"]


def test_ccbus_plugins_lists_it(host: PluginHost) -> None:
    result = CliRunner().invoke(cli, ["plugins"], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    section = result.output.split("enreach 0.1.0", 1)[1].split("\n\n")[0]
    assert "sources: enreach" in section
    assert "simulators: enreach" in section
    assert "enreach.subscribe" in section


def check(tmp_path: Path, host: PluginHost, options: str) -> Any:
    (tmp_path / "rules").mkdir(exist_ok=True)
    config = tmp_path / "ccbus.yaml"
    config.write_text(
        textwrap.dedent("""\
        sources:
          rte-prod:
            plugin: enreach
            options:
              api_url: https://api-silox.enreachvoice.com
              username: ccbus
              secret: s3cret
        """)
        + textwrap.indent(textwrap.dedent(options), " " * 6)
    )
    return CliRunner().invoke(cli, ["check", "-c", str(config)], obj={"plugins": host})


def test_ccbus_check_catches_a_misspelt_option(tmp_path: Path, host: PluginHost) -> None:
    result = check(tmp_path, host, "ping_evry: 20s\n")
    assert result.exit_code == 1
    assert (
        "ccbus.yaml:8:7: sources.rte-prod.options: unknown key 'ping_evry' "
        "(did you mean 'ping_every'?)"
    ) in result.output


def test_ccbus_check_catches_a_misspelt_subscription_group(
    tmp_path: Path, host: PluginHost
) -> None:
    result = check(tmp_path, host, f"subscriptions:\n  queue:\n    {QUEUE}: [QueueStatus]\n")
    assert result.exit_code == 1
    assert "ccbus.yaml:9:9: sources.rte-prod.options.subscriptions: unknown key 'queue'" in (
        result.output
    )
    assert "did you mean 'queues'" in result.output


@pytest.mark.parametrize(
    ("subscriptions", "message"),
    [
        (
            "users:\n  not-a-guid: [UserStatus]\n",
            "'not-a-guid' is not a GUID",
        ),
        (
            f"users:\n  {USER}: [UserStatu]\n",
            f"{USER}: unknown event name 'UserStatu' (did you mean 'UserStatus'?)",
        ),
        (
            f"users:\n  {USER}: [QueueStatus]\n",
            "event 'QueueStatus' is a Queue event, not available for a User entity",
        ),
        (
            f"call_lists:\n  {QUEUE}: []\n",
            "no event names",
        ),
    ],
)
def test_ccbus_check_validates_guids_and_event_names(
    tmp_path: Path, host: PluginHost, subscriptions: str, message: str
) -> None:
    result = check(tmp_path, host, "subscriptions:\n" + textwrap.indent(subscriptions, "  "))
    assert result.exit_code == 1
    assert message in result.output
    assert "ccbus.yaml:9:" in result.output  # the line of the offending group


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("user_id: someone\n", "user_id 'someone' must be 'me' or a user GUID"),
        ("hub_url: rte.example\n", "'rte.example' is not an http(s):// or ws(s):// URL"),
        ("server_timeout: 0\n", "must be positive"),
    ],
)
def test_ccbus_check_explains_bad_values(
    tmp_path: Path, host: PluginHost, options: str, message: str
) -> None:
    result = check(tmp_path, host, options)
    assert result.exit_code == 1
    assert message in result.output


def test_a_correct_config_checks_ok_and_normalises_guids(tmp_path: Path, host: PluginHost) -> None:
    upper = "{" + USER.upper() + "}"
    result = check(
        tmp_path,
        host,
        f"user_id: me\nsubscriptions:\n  users:\n    '{upper}': [userstatus, UserCallInComing]\n"
        f"  queues:\n    {QUEUE}: [QueueStatus]\n",
    )
    assert result.exit_code == 0, result.output
    options = EnreachOptions.model_validate(
        {
            "api_url": "https://x.example/",
            "username": "u",
            "secret": "s",
            "subscriptions": {"users": {upper: ["userstatus", "UserTerminalStatusEvent"]}},
        }
    )
    assert options.api_url == "https://x.example"
    assert options.subscriptions.pairs() == [(USER, "UserStatus"), (USER, "UserTerminalStatus")]


def test_the_plugins_example_rules_pass_their_tests(host: PluginHost) -> None:
    result = CliRunner().invoke(cli, ["test", str(PLUGIN_RULES)], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert "2 passed, 0 failed" in result.output


@pytest.mark.anyio
async def test_the_demo_source_shows_live_enreach_events_matching_the_shipped_rules(
    tmp_path: Path,
) -> None:
    fired: list[tuple[str, str, str]] = []
    seen = anyio.Event()

    def observe(event: Any, firings: list[Any], calls: list[Any]) -> None:
        fired.extend((f.rule.name, event.type, event.source) for f in firings)
        if ("agent-state-trace", "agent.state_changed", "enreach-live") in fired:
            seen.set()

    demo = demo_source()
    async with demo_simulator() as overrides:
        config = {
            "sources": {
                demo.name: {"plugin": demo.plugin, "options": {**demo.options, **overrides}}
            },
            "rules": [str(shipped_rules_dir())],
            "state_dir": "state",
            "http": {"enabled": False},
        }
        (tmp_path / "ccbus.yaml").write_text(yaml.safe_dump(config))
        host = PluginHost(autoload=False, extra=[ccbus_enreach])
        bus = Bus(
            load_config(tmp_path / "ccbus.yaml"),
            host,
            dry_run=True,
            observer=observe,
            persist_state=False,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: bus.run(watch_rules=False))
            with anyio.fail_after(30):  # the scenario's first event is an agent status
                await seen.wait()
            bus.stop()


@pytest.mark.anyio
async def test_ccbus_simulate_enreach_runs_until_told_to_stop() -> None:
    async with await anyio.open_process(
        [str(CCBUS), "simulate", "enreach", "--scenario", "none"]
    ) as process:
        assert process.stdout is not None
        with anyio.fail_after(30):
            first = (await process.stdout.receive()).decode().splitlines()[0]
        assert first.startswith("Enreach RTE simulator listening on http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1]
        async with httpx.AsyncClient(trust_env=False) as http:
            status = (await http.get(f"{url}/_sim/status")).json()
            refused = await http.get(f"{url}/token/me/rte/", auth=("ccbus-demo", "wrong"))
            token = await http.get(f"{url}/token/me/rte/", auth=("ccbus-demo", "simulator-secret"))
        assert status["clients"] == []
        assert refused.status_code == 401
        assert token.json()["WssEndpoint"] == url.replace("http://", "ws://") + "/rte"
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await process.wait() == 0
