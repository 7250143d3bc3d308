"""The plugin as ccbus sees it: entry point, `ccbus plugins`, `ccbus check`, demo, simulator CLI."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import ccbus_genesys
import pytest
import yaml
from aiokafka import AIOKafkaConsumer
from ccbus_genesys.demo import demo_simulator, demo_source
from ccbus_genesys.options import GenesysOptions
from click.testing import CliRunner

from ccbus import load_config
from ccbus.cli.app import attach_plugins, cli, shipped_rules_dir
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

CCBUS = Path(sys.executable).parent / "ccbus"


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """Every installed plugin, found through entry points as in production."""
    host = PluginHost()
    attach_plugins(host)
    return host


def test_found_through_its_entry_point(host: PluginHost) -> None:
    assert [f for f in host.failures if f.name == "genesys"] == []
    assert host.pm.get_plugin("genesys") is ccbus_genesys
    assert host.sources["genesys"].options is GenesysOptions
    assert [d.name for d in host.demo_sources() if d.plugin == "genesys"] == ["genesys-live"]


def test_ccbus_plugins_lists_it(host: PluginHost) -> None:
    result = CliRunner().invoke(cli, ["plugins"], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    section = result.output.split("genesys 0.1.0", 1)[1].split("\n\n")[0]
    assert "sources: genesys" in section and "simulators: genesys" in section


def check(tmp_path: Path, host: PluginHost, options: str) -> Any:
    (tmp_path / "rules").mkdir(exist_ok=True)
    config = tmp_path / "ccbus.yaml"
    config.write_text(
        "sources:\n  genesys-prod:\n    plugin: genesys\n    options:\n"
        + textwrap.indent(textwrap.dedent(options), " " * 6)
    )
    return CliRunner().invoke(cli, ["check", "-c", str(config)], obj={"plugins": host})


def test_ccbus_check_catches_a_misspelt_option(tmp_path: Path, host: PluginHost) -> None:
    result = check(tmp_path, host, "bootstrap_servers: kafka-1:9092\nauto_offset_rest: earliest\n")
    assert result.exit_code == 1
    assert ("ccbus.yaml:6:7: sources.genesys-prod.options: unknown key 'auto_offset_rest' "
            "(did you mean 'auto_offset_reset'?)") in result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("security_protocol: SASL_SSL\nsasl_mechanism: PLAIN\n",
         "needs sasl_mechanism, sasl_username and sasl_password"),
        ("sasl_mechanism: SCRAM-SHA-256\nsasl_username: u\nsasl_password: p\n",
         "sasl_mechanism is set but security_protocol is PLAINTEXT"),
        ("sasl_mechanism: SCRAM-SHA-1\n", "sasl_mechanism"),
        ("group_id: callthread\n", "not to use the group name 'callthread'"),
        ("agent_state_topic: null\ncall_thread_topic: null\n", "nothing to read"),
        ("auto_offset_reset: newest\n", "auto_offset_reset"),
        ("session_timeout: 2s\nheartbeat_interval: 5s\n", "heartbeat_interval must be shorter"),
    ],
)
def test_ccbus_check_explains_inconsistent_options(
    tmp_path: Path, host: PluginHost, options: str, message: str
) -> None:
    result = check(tmp_path, host, "bootstrap_servers: kafka-1:9092\n" + options)
    assert result.exit_code == 1
    assert message in result.output


def test_a_correct_config_checks_ok(tmp_path: Path, host: PluginHost) -> None:
    result = check(tmp_path, host, """\
        bootstrap_servers: "kafka-1:9093, kafka-2:9093"
        topic_prefix: prod-
        security_protocol: SASL_SSL
        sasl_mechanism: SCRAM-SHA-512
        sasl_username: ccbus
        sasl_password: s3cret
        ssl_cafile: ca.pem
        tenants: [9350e2fc-a1dd-4c65-8d40-1f75a2e080dd]
        """)
    assert result.exit_code == 0, result.output
    options = GenesysOptions(bootstrap_servers="kafka-1:9093, kafka-2:9093", topic_prefix="p-")
    assert options.bootstrap_servers == ["kafka-1:9093", "kafka-2:9093"]
    assert options.topics() == {"p-voice-agentstate": "agentstate",
                                "p-voice-callthread": "callthread"}


@pytest.mark.anyio
async def test_the_demo_source_shows_live_genesys_events_matching_the_shipped_rules(
    tmp_path: Path,
) -> None:
    fired: list[tuple[str, str, str]] = []
    abandoned = anyio.Event()

    def observe(event: Any, firings: list[Any], calls: list[Any]) -> None:
        fired.extend((f.rule.name, event.type, event.source) for f in firings)
        if ("abandoned-call", "call.abandoned", "genesys-live") in fired:
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
        host = PluginHost(autoload=False, extra=[ccbus_genesys])
        bus = Bus(load_config(tmp_path / "ccbus.yaml"), host, dry_run=True, observer=observe,
                  persist_state=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: bus.run(watch_rules=False))
            with anyio.fail_after(30):  # the scenario takes ~5 s; the group joins in ~1 s
                await abandoned.wait()
            bus.stop()
    assert ("agent-state-trace", "agent.state_changed", "genesys-live") in fired


@pytest.mark.anyio
async def test_ccbus_simulate_genesys_produces_to_its_broker_until_told_to_stop() -> None:
    async with await anyio.open_process(
        [str(CCBUS), "simulate", "genesys", "--every", "0"]
    ) as process:
        assert process.stdout is not None
        output = b""
        with anyio.fail_after(30):
            while b"played contact-center" not in output:
                output += await process.stdout.receive()
        text = output.decode()
        bootstrap = text.split("test broker (not Kafka) at ", 1)[1].split()[0]
        assert "plugin: genesys" in text and f'["{bootstrap}"]' in text
        consumer = AIOKafkaConsumer("voice-agentstate", "voice-callthread",
                                    bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            records: list[Any] = []
            with anyio.fail_after(20):
                while len(records) < 21:
                    for batch in (await consumer.getmany(timeout_ms=500)).values():
                        records += batch
        finally:
            await consumer.stop()
        names = [json.loads(r.value)["id"] for r in records]
        assert "EventAbandoned" in names and "EventAgentLogin" in names
        assert all(r.key.decode().count(":") >= 1 for r in records)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await process.wait() == 0
