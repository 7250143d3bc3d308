"""The plugin as ccbus sees it: entry point, `ccbus plugins`, `ccbus check`, rules, demo, CLI."""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import ccbus_avaya
import httpx
import pytest
import yaml
from ccbus_avaya.demo import demo_simulator, demo_source
from ccbus_avaya.options import AvayaOptions
from click.testing import CliRunner

from ccbus import load_config
from ccbus.cli.app import attach_plugins, cli, shipped_rules_dir
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

PLUGIN_RULES = Path(__file__).resolve().parent.parent / "rules"
CCBUS = Path(sys.executable).parent / "ccbus"


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """Every installed plugin, found through entry points as in production."""
    host = PluginHost()
    attach_plugins(host)
    return host


def test_found_through_its_entry_point(host: PluginHost) -> None:
    assert [f for f in host.failures if f.name == "avaya"] == []
    assert host.pm.get_plugin("avaya") is ccbus_avaya
    assert host.sources["avaya"].options is AvayaOptions
    assert [d.name for d in host.demo_sources() if d.plugin == "avaya"] == ["avaya-live"]


def test_ccbus_plugins_lists_it(host: PluginHost) -> None:
    result = CliRunner().invoke(cli, ["plugins"], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    section = result.output.split("avaya 0.1.0", 1)[1].split("\n\n")[0]
    assert "(ccbus_avaya)" in section
    assert "sources: avaya" in section
    assert "simulators: avaya" in section


def check(tmp_path: Path, host: PluginHost, options: str) -> Any:
    (tmp_path / "rules").mkdir(exist_ok=True)
    config = tmp_path / "ccbus.yaml"
    config.write_text(
        textwrap.dedent("""\
        sources:
          avaya-prod:
            plugin: avaya
            options:
        """)
        + textwrap.indent(textwrap.dedent(options), " " * 6)
    )
    return CliRunner().invoke(cli, ["check", "-c", str(config)], obj={"plugins": host})


def test_ccbus_check_catches_a_misspelt_option(tmp_path: Path, host: PluginHost) -> None:
    result = check(
        tmp_path,
        host,
        """\
        account_id: KXBQTZ
        client_id: ccbus
        client_secret: s3cret
        ping_evry: 20s
        """,
    )
    assert result.exit_code == 1
    assert (
        "ccbus.yaml:8:7: sources.avaya-prod.options: unknown key 'ping_evry' "
        "(did you mean 'ping_every'?)"
    ) in result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("transport: webhook\n", "transport 'webhook' needs 'callback_url'"),
        ("events: [AgentState, AgentStatus]\n", "unknown event(s) 'AgentStatus'"),
        ("ping_every: soon\n", "ping_every"),
    ],
)
def test_ccbus_check_explains_inconsistent_options(
    tmp_path: Path, host: PluginHost, options: str, message: str
) -> None:
    base = "account_id: KXBQTZ\nclient_id: ccbus\nclient_secret: s3cret\n"
    result = check(tmp_path, host, base + options)
    assert result.exit_code == 1
    assert message in result.output


def test_ccbus_check_wants_the_http_listener_for_webhooks(tmp_path: Path, host: PluginHost) -> None:
    base = "account_id: KXBQTZ\nclient_id: ccbus\nclient_secret: s3cret\n"
    webhook = "transport: webhook\ncallback_url: https://ccbus.example/avaya/avaya-prod\n"
    assert check(tmp_path, host, base + webhook).exit_code == 0
    (tmp_path / "ccbus.yaml").write_text(
        (tmp_path / "ccbus.yaml").read_text() + "http: {enabled: false}\n"
    )
    result = CliRunner().invoke(
        cli, ["check", "-c", str(tmp_path / "ccbus.yaml")], obj={"plugins": host}
    )
    assert result.exit_code == 1
    assert "ccbus.yaml:8:7: sources.avaya-prod: transport 'webhook'" in result.output


def test_a_correct_config_checks_ok(tmp_path: Path, host: PluginHost) -> None:
    result = check(tmp_path, host, "account_id: KXBQTZ\nclient_id: ccbus\nclient_secret: s3\n")
    assert result.exit_code == 0, result.output
    options = AvayaOptions(account_id="KXBQTZ", client_id="c", client_secret="s")
    assert options.resolved_token_url == (
        "https://uk.cc.avayacloud.com/auth/realms/KXBQTZ/protocol/openid-connect/token"
    )


def test_the_plugins_example_rules_pass_their_tests(host: PluginHost) -> None:
    result = CliRunner().invoke(cli, ["test", str(PLUGIN_RULES)], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert " 0 failed" in result.output


@pytest.mark.anyio
async def test_the_demo_source_shows_live_avaya_events_matching_the_shipped_rules(
    tmp_path: Path,
) -> None:
    fired: list[tuple[str, str, str]] = []
    abandoned = anyio.Event()

    def observe(event: Any, firings: list[Any], calls: list[Any]) -> None:
        fired.extend((f.rule.name, event.type, event.source) for f in firings)
        if ("abandoned-call", "call.abandoned", "avaya-live") in fired:
            abandoned.set()

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
        host = PluginHost(autoload=False, extra=[ccbus_avaya])
        bus = Bus(
            load_config(tmp_path / "ccbus.yaml"),
            host,
            dry_run=True,
            observer=observe,
            persist_state=False,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: bus.run(watch_rules=False))
            with anyio.fail_after(6):  # the scenario is ~4.5 s long; the abandon is early
                await abandoned.wait()
            bus.stop()
    assert ("agent-state-trace", "agent.state_changed", "avaya-live") in fired


@pytest.mark.anyio
async def test_ccbus_simulate_avaya_runs_until_told_to_stop() -> None:
    async with await anyio.open_process(
        [str(CCBUS), "simulate", "avaya", "--scenario", "none"]
    ) as process:
        assert process.stdout is not None
        with anyio.fail_after(15):
            first = (await process.stdout.receive()).decode().splitlines()[0]
        assert first.startswith("Avaya simulator listening on http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1]
        async with httpx.AsyncClient(trust_env=False) as http:
            status = (await http.get(f"{url}/_sim/status")).json()
        assert status["sessions"] == 0
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await process.wait() == 0
