"""The plugin as ccbus sees it: entry point, plugins list, check, and `ccbus simulate cucm`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import ccbus_cucm
import pytest
from ccbus_cucm.options import CucmOptions
from ccbus_cucm.protocol import COMMANDS
from ccbus_peers.activemq import ActiveMQBroker, unique_name
from click.testing import CliRunner

from ccbus.cli.app import attach_plugins, cli
from ccbus.plugins import PluginHost

CCBUS = Path(sys.executable).parent / "ccbus"


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """Every installed plugin, found through entry points as in production."""
    host = PluginHost()
    attach_plugins(host)
    return host


def test_found_through_its_entry_point(host: PluginHost) -> None:
    assert [f for f in host.failures if f.name == "cucm"] == []
    assert host.pm.get_plugin("cucm") is ccbus_cucm
    assert host.sources["cucm"].options is CucmOptions
    for spec in COMMANDS:
        assert host.actions[spec.action].description.endswith(f"({spec.command}#<agent>)")


def test_ccbus_plugins_lists_it(host: PluginHost) -> None:
    result = CliRunner().invoke(cli, ["plugins"], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    section = result.output.split("cucm 0.1.0", 1)[1].split("\n\n")[0]
    assert "sources: cucm" in section
    assert "cucm.make_call" in section and "cucm.blind_transfer" in section
    assert "simulators: cucm" in section


def check(tmp_path: Path, host: PluginHost, options: str, rules: str = "rules: []\n") -> Any:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "cucm.yaml").write_text(rules)
    config = tmp_path / "ccbus.yaml"
    config.write_text(
        textwrap.dedent("""\
        sources:
          cucm-prod:
            plugin: cucm
            options:
        """)
        + textwrap.indent(textwrap.dedent(options), " " * 6)
        + "rules: [rules]\n"
    )
    return CliRunner().invoke(cli, ["check", "-c", str(config)], obj={"plugins": host})


def test_ccbus_check_names_misspelt_keys_with_file_and_line(tmp_path: Path,
                                                            host: PluginHost) -> None:
    result = check(tmp_path, host, """\
        connector_queue: Connector1
        helo_interval: 3s
        broker:
          url: stomp://127.0.0.1:61613
          hartbeat_send: 5s
        """)
    assert result.exit_code == 1
    assert ("ccbus.yaml:6:7: sources.cucm-prod.options: unknown key 'helo_interval' "
            "(did you mean 'hello_interval'?)") in result.output
    assert "unknown key 'hartbeat_send' (did you mean 'heartbeat_send'?)" in result.output
    assert "ccbus.yaml:9:" in result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("error_policy: {NOT_AN_ERROR: fail}\n", "unknown error code 'NOT_AN_ERROR'"),
        ("error_policy: {INVALID_PARTY: maybe}\n", "error_policy"),
        ("connector_queue: 'Connector#1'\n", "'Connector#1'"),
        ("answer_timeout: 0\n", "answer_timeout must be positive"),
        ("broker: {url: 'http://x'}\n", "scheme must be one of"),
    ],
)
def test_ccbus_check_explains_bad_values(tmp_path: Path, host: PluginHost, options: str,
                                         message: str) -> None:
    result = check(tmp_path, host, options)
    assert result.exit_code == 1
    assert message in result.output


def test_ccbus_check_catches_misspelt_action_parameters(tmp_path: Path,
                                                       host: PluginHost) -> None:
    rules = textwrap.dedent("""\
        rules:
          - name: callback
            on: call.abandoned
            do:
              - cucm.make_call: {agent: "1001", numbr: "{caller}"}
        """)
    result = check(tmp_path, host, "error_policy: {INVALID_PARTY: fail}\n", rules)
    assert result.exit_code == 1
    assert "numbr" in result.output and "cucm.yaml:5" in result.output
    fixed = rules.replace("numbr", "number")
    assert check(tmp_path, host, "error_policy: {PREVILLEGE_VIOLATION: fail}\n",
                 fixed).exit_code == 0


@pytest.mark.anyio
async def test_ccbus_simulate_cucm_serves_a_real_session(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, options_for: Any,
) -> None:
    name = unique_name("Connector")
    process = await anyio.open_process(
        [str(CCBUS), "simulate", "cucm", "--broker", activemq.stomp_url, "--queue", name,
         "--pattern", "json", "--ring-every", "0.3s", "--run-for", "120s"],
        stderr=subprocess.STDOUT,
    )
    output = b""

    async def read() -> None:
        nonlocal output
        assert process.stdout is not None
        async for chunk in process.stdout:
            output += chunk

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            with anyio.fail_after(60):
                while b"plugin: cucm" not in output:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            async with cucm_bus(options_for(activemq, name)) as h:
                await h.wait_until(lambda: h.state() == "connected", timeout=30)
                await h.publish("test.cucm.login", agent="1005")
                await h.wait_until(lambda: h.counter("actions", action="cucm.login",
                                                     outcome="ok") == 1, timeout=30)
                # the emulator rings logged-in agents: answer the first call
                await h.wait_until(lambda: h.recorder.of("call.started"), timeout=30)
                call = h.recorder.of("call.started")[0].event.data["callId"]
                await h.publish("test.cucm.answer_call", agent="1005", connection_id=call)
                await h.wait_until(lambda: h.counter("actions", action="cucm.answer_call",
                                                     outcome="ok") == 1, timeout=30)
            tg.cancel_scope.cancel()
    finally:
        process.terminate()
        with anyio.move_on_after(20):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode()
    assert f"CUCM Connector emulator on queue {name}" in text
    assert "ringing 1005 from +4930" in text


def test_the_example_rules_pass_their_own_tests(host: PluginHost) -> None:
    rules = Path(__file__).resolve().parent.parent / "rules"
    result = CliRunner().invoke(cli, ["test", str(rules)], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert "4 passed, 0 failed" in result.output
