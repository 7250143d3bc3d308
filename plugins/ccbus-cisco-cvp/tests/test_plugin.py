"""The plugin as ccbus sees it: entry point, `ccbus plugins`, `ccbus check`, rules, and
`ccbus simulate cvp` feeding a running source through a real broker and real syslog."""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import ccbus_cisco_cvp
import pytest
from ccbus_cisco_cvp.options import CvpOptions
from ccbus_peers.activemq import ActiveMQBroker, unique_name
from click.testing import CliRunner

from ccbus.cli.app import attach_plugins, cli
from ccbus.plugins import PluginHost

PLUGIN_RULES = Path(__file__).resolve().parent.parent / "rules"
CCBUS = Path(sys.executable).parent / "ccbus"


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """Every installed plugin, found through entry points as in production."""
    host = PluginHost()
    attach_plugins(host)
    return host


def test_found_through_its_entry_point(host: PluginHost) -> None:
    assert [f for f in host.failures if f.name == "cisco-cvp"] == []
    assert host.pm.get_plugin("cisco-cvp") is ccbus_cisco_cvp
    assert host.sources["cisco-cvp"].options is CvpOptions
    # no demo source: CVP's events need a broker, which `ccbus demo` does not have
    assert [d for d in host.demo_sources() if d.plugin == "cisco-cvp"] == []


def test_ccbus_plugins_lists_it(host: PluginHost) -> None:
    result = CliRunner().invoke(cli, ["plugins"], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    section = result.output.split("cisco-cvp 0.1.0", 1)[1].split("\n\n")[0]
    assert "sources: cisco-cvp" in section
    assert "simulators: cvp" in section


def check(tmp_path: Path, host: PluginHost, options: str) -> Any:
    (tmp_path / "rules").mkdir(exist_ok=True)
    config = tmp_path / "ccbus.yaml"
    config.write_text(
        textwrap.dedent("""\
        sources:
          cvp-prod:
            plugin: cisco-cvp
            options:
        """)
        + textwrap.indent(textwrap.dedent(options), " " * 6)
    )
    return CliRunner().invoke(cli, ["check", "-c", str(config)], obj={"plugins": host})


GOOD = """\
broker:
  url: stomp+ssl://amq.example.net:61614
  client_id: ccbus-cvp-prod
  username: ccbus
  password: s3cret
"""


def test_a_correct_config_checks_ok(tmp_path: Path, host: PluginHost) -> None:
    result = check(tmp_path, host, GOOD + "syslog: {udp: '0.0.0.0:514', tcp: '0.0.0.0:601'}\n")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  hearbeat_send: 5s\n",
         "ccbus.yaml:10:9: sources.cvp-prod.options.broker: unknown key 'hearbeat_send' "
         "(did you mean 'heartbeat_send'?)"),
        ("topics:\n  calls_endd: cvp/ended\n",
         "sources.cvp-prod.options.topics: unknown key 'calls_endd' (did you mean 'calls_ended'?)"),
        ("syslog: {udpp: '0.0.0.0:514'}\n",
         "sources.cvp-prod.options.syslog: unknown key 'udpp' (did you mean 'udp'?)"),
        ("durabel: false\n",
         "sources.cvp-prod.options: unknown key 'durabel' (did you mean 'durable'?)"),
    ],
)
def test_ccbus_check_names_a_misspelt_key_with_file_and_line(
    tmp_path: Path, host: PluginHost, extra: str, message: str
) -> None:
    result = check(tmp_path, host, GOOD + extra)
    assert result.exit_code == 1
    assert message in result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("broker: {url: 'amqp://amq:5672', client_id: x}\n", "scheme must be one of"),
        ("broker: {url: 'stomp://amq:61613'}\n", "durable subscriptions need 'broker.client_id'"),
        ("durable: false\n", "set 'broker' (JMS topics), 'syslog', or both"),
        ("syslog: {udp: 'everywhere'}\n", "syslog.udp 'everywhere': expected host:port"),
    ],
)
def test_ccbus_check_explains_inconsistent_options(
    tmp_path: Path, host: PluginHost, options: str, message: str
) -> None:
    result = check(tmp_path, host, options)
    assert result.exit_code == 1
    assert message in result.output


def test_the_plugins_example_rules_pass_their_tests(host: PluginHost) -> None:
    result = CliRunner().invoke(cli, ["test", str(PLUGIN_RULES)], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert "3 passed, 0 failed" in result.output


@pytest.mark.anyio
async def test_ccbus_simulate_cvp_feeds_a_running_source(
    activemq: ActiveMQBroker, cvp_bus: Any, tmp_path: Path
) -> None:
    """The simulator as an admin runs it: its call flows, malformed bodies and syslog lines
    reach the rules through the real broker and a real UDP socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        udp = sock.getsockname()[1]
    options = {
        "broker": {"url": activemq.stomp_url, "client_id": unique_name("sim"),
                   "backoff_initial": 0.05, "backoff_cap": 0.5},
        "syslog": {"udp": f"127.0.0.1:{udp}"},
    }
    # the simulator publishes on the default topics: this test's subscriptions start now
    async with cvp_bus(options) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        result = await anyio.run_process(
            [str(CCBUS), "simulate", "cvp", "--broker", activemq.stomp_url, "--calls", "8",
             "--every", "0", "--pause", "0", "--seed", "4", "--malformed",
             "--syslog", f"udp://127.0.0.1:{udp}"],
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        output = result.stdout.decode()
        assert "plugin: cisco-cvp" in output and "played" in output
        types = lambda: set(h.recorder.types())  # noqa: E731
        await h.wait_until(lambda: {"call.started", "call.queued", "call.transferred",
                                    "call.abandoned", "call.ended", "system.alert",
                                    "device.status_changed", "cvp.syslog"} <= types(), timeout=30)
        source = h.source()
        await h.wait_until(lambda: sum(source.rejected.values()) >= 7, timeout=30)
    assert {"invalid_json", "missing_field", "bad_enum", "wrong_type", "wrong_channel",
            "unknown_event_type", "not_an_object"} <= set(source.rejected)
