"""The command line as an admin uses it: exit codes and messages."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import click
import pytest
from click.testing import CliRunner
from support import REPO, write

from ccbus import DemoSource, Event, Options, SourceContext, SourceSpec, hookimpl
from ccbus.cli.app import attach_plugins, cli
from ccbus.plugins import PluginHost

CCBUS = str(Path(sys.executable).parent / "ccbus")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), obj={"plugins": PluginHost(autoload=False)})
    return result.exit_code, result.output


def test_check_accepts_the_example_config_and_shipped_rules() -> None:
    """With the first-party plugins installed (they declare the vendor event types)."""
    result = CliRunner().invoke(cli, ["check", "-c", str(REPO / "examples" / "ccbus.yaml")],
                                obj={"plugins": PluginHost()})
    code, out = result.exit_code, result.output
    assert code == 0, out
    assert out.startswith("OK: 2 source(s),")


def test_check_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "rules" / "r.yaml", """
        rules:
          - name: a
            on: call.ended
            if: duration >> >
            do: [log: x]
          - name: b
            on: call.ended
            do: [notfy: {to: ops}]
    """)
    config = write(tmp_path / "c.yaml", """
        sources:
          web: {plugin: webhook, options: {tokn: x}}
    """)
    code, out = invoke("check", "-c", str(config))
    assert code == 1
    assert f"{config}:2:36: sources.web.options: unknown key 'tokn' (did you mean 'token'?)" in out
    assert f"{tmp_path}/rules/r.yaml:4:5: rule 'a': invalid syntax" in out
    assert f"{tmp_path}/rules/r.yaml:8:10: rule 'b': unknown action 'notfy'" in out
    assert "problem(s) found" in out


def test_check_needs_something_to_check() -> None:
    code, out = invoke("check")
    assert code == 2 and "give -c CONFIG or --rules DIR" in out


def test_rule_tests_pass_and_fail_with_exit_codes(tmp_path: Path) -> None:
    write(tmp_path / "ok" / "r.yaml", """
        rules: [{name: r, on: a, do: [log: "{n}"]}]
        tests:
          - {name: fine, events: [{type: a, data: {n: 1}}], expect: [{log: "1"}]}
    """)
    write(tmp_path / "bad" / "r.yaml", """
        rules: [{name: r, on: a, do: [log: "{n}"]}]
        tests:
          - {name: wrong, events: [{type: a, data: {n: 1}}], expect: [{log: "2"}]}
    """)
    code, out = invoke("test", str(tmp_path / "ok"))
    assert code == 0 and "1 passed, 0 failed" in out
    code, out = invoke("test", str(tmp_path / "bad"))
    assert code == 1 and "FAIL" in out and "message expected '2', got '1'" in out
    write(tmp_path / "none" / "r.yaml", "rules: [{name: r, on: a, do: [log: x]}]\n")
    code, out = invoke("test", str(tmp_path / "none"))
    assert code == 1 and "no rule tests found" in out


def test_try_shows_conditions_and_calls_and_runs_nothing() -> None:
    code, out = invoke("try", "--event", str(REPO / "examples" / "events" / "abandoned.json"),
                       "--rules", str(REPO / "rules"))
    assert code == 0, out
    assert "abandoned-call" in out and "would call log(message='abandoned call" in out
    assert "'count' gate decides" in out


def test_try_fires_for_timers_on_the_events_clock_and_lists_those_still_armed(
    tmp_path: Path,
) -> None:
    events = write(tmp_path / "stuck.jsonl", """
        {"type": "agent.state_changed", "time": "2026-12-03T09:00:00Z", "data": {"agentId": "a1", "state": "not_ready"}}
        {"type": "agent.state_changed", "time": "2026-12-03T09:20:00Z", "data": {"agentId": "a2", "state": "not_ready"}}
    """)  # noqa: E501
    code, out = invoke("try", "--event", str(events), "--rules", str(REPO / "rules"))
    assert code == 0, out
    fired, second = out.index("'for' timer of agent-stuck-not-ready fired"), out.index("a2: not_ready")
    assert fired < second  # a1's 15 minutes passed before the second event's time
    assert "a1 (agent) not ready for 15 minutes" in out  # the vendor: the type's prefix
    assert ("'for' timer of agent-stuck-not-ready armed for 'a2': would fire at "
            "2026-12-03T09:35:00+00:00") in out
    assert "a2 (agent) not ready" not in out


def test_plugins_lists_builtins_and_functions() -> None:
    code, out = invoke("plugins", "--functions")
    assert code == 0
    assert "ccbus.sources.replay builtin" in out and "sources: replay" in out
    assert "actions: log" in out and "matches" in out


def test_replay_file_through_rules(tmp_path: Path) -> None:
    events = write(tmp_path / "e.jsonl", """
        {"type": "call.abandoned", "data": {"callId": "c1", "caller": "123", "queue": "q"}}
        not json at all
    """)
    code, out = invoke("replay", str(events), "--rules", str(REPO / "rules"))
    assert code == 0, out
    assert "✔ abandoned-call" in out and "bad lines: 1" in out


@pytest.mark.slow
def test_the_demo_runs_as_the_readme_says() -> None:
    result = subprocess.run([CCBUS, "demo"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    for vendor in ("avaya", "cucm", "cvp", "enreach", "genesys"):
        assert f"from {vendor}-demo" in result.stdout
    assert "✔ cvp-critical-threshold" in result.stdout
    assert "emit(type='ops.abandon_surge'" in result.stdout
    assert "bad lines: 0" in result.stdout
    assert "Traceback" not in result.stderr
    # the plugins' own sources ran live against their in-process simulators (the
    # README says so), and their events reached the shipped rules
    live = ("enreach-live", "avaya-live", "genesys-live")
    silent = [name for name in live if f"  from {name}\n" not in result.stdout]
    assert not silent, f"no matched event from {silent} in:\n{result.stdout[-3000:]}"


class CommandPlugin:
    """A plugin adding a command group and a simulator, as vendor plugins do."""

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.group(name="acmetest")
        def group() -> None:
            """Acme things."""

        @group.command()
        def status() -> None:
            click.echo("acme is fine")

    @hookimpl
    def register_simulators(self) -> list[click.Command]:
        @click.command(name="acmetest")
        @click.option("--calls", default=3)
        def simulate_acme(calls: int) -> None:
            click.echo(f"simulated {calls} calls")

        return [simulate_acme]


def test_plugins_add_commands_and_simulators() -> None:
    host = PluginHost(autoload=False, extra=[CommandPlugin()])
    attach_plugins(host)
    runner = CliRunner()
    result = runner.invoke(cli, ["acmetest", "status"], obj={"plugins": host})
    assert result.output == "acme is fine\n"
    result = runner.invoke(cli, ["simulate", "acmetest", "--calls", "5"], obj={"plugins": host})
    assert result.output == "simulated 5 calls\n"
    result = runner.invoke(cli, ["plugins"], obj={"plugins": host})
    assert "simulators: acmetest" in result.output


class LivePlugin:
    """A source plugin offering itself to the demo, with a 'simulator' that sets its options."""

    @hookimpl
    def register_sources(self) -> list[SourceSpec]:
        class Options_(Options):
            greeting: str = "unset"

        class Live:
            def __init__(self, ctx: SourceContext) -> None:
                self.ctx = ctx

            async def run(self) -> None:
                await self.ctx.emit(Event(type="agent.state_changed", source=self.ctx.name,
                                          data={"agentId": self.ctx.options.greeting,
                                                "state": "available"}))
                await anyio.sleep_forever()

        return [SourceSpec(name="livetest", options=Options_, factory=Live)]

    @hookimpl
    def register_demo_sources(self) -> list[DemoSource]:
        @contextlib.asynccontextmanager
        async def simulator() -> AsyncIterator[dict[str, str]]:
            yield {"greeting": "from-the-simulator"}

        return [DemoSource(name="live-test", plugin="livetest", options={}, simulator=simulator)]


def test_the_demo_runs_plugins_live_against_their_simulators() -> None:
    host = PluginHost(autoload=False, extra=[LivePlugin()])
    result = CliRunner().invoke(cli, ["demo", "--live-seconds", "0.3"], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert "Live against simulators for 0.3s: live-test (livetest)" in result.output
    assert "agent from-the-simulator: available" in result.output


def test_check_refuses_a_port_out_of_range_and_a_state_dir_that_is_a_file(
    tmp_path: Path,
) -> None:
    write(tmp_path / "rules" / "r.yaml", "rules: [{name: r, on: x, do: [log: x]}]\n")
    write(tmp_path / "state", "not a directory\n")
    config = write(tmp_path / "c.yaml", """
        state_dir: state
        http: {listen: "127.0.0.1:99999"}
    """)
    code, out = invoke("check", "-c", str(config))
    assert code == 1, out
    assert f"{config}:2:" in out and "port 99999 is out of range (0-65535)" in out
    config.write_text('state_dir: state\nhttp: {listen: "127.0.0.1:8787"}\n')
    code, out = invoke("check", "-c", str(config))
    assert code == 1, out
    assert f"{config}:1:" in out and f"state_dir: {tmp_path / 'state'} is a file" in out


def test_run_refuses_a_port_out_of_range_without_a_traceback(tmp_path: Path) -> None:
    write(tmp_path / "rules" / "r.yaml", "rules: [{name: r, on: x, do: [log: x]}]\n")
    config = write(tmp_path / "c.yaml", 'http: {listen: "127.0.0.1:99999"}\n')
    done = subprocess.run([CCBUS, "run", "-c", str(config)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "port 99999 is out of range" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("listen", ["0.0.0.0:8787", "[::]:8787", "192.0.2.1:8787"])
def test_check_warns_when_the_listener_binds_beyond_loopback(tmp_path: Path, listen: str) -> None:
    write(tmp_path / "rules" / "r.yaml", "rules: [{name: r, on: system.alert, do: [log: x]}]\n")
    config = write(tmp_path / "c.yaml", f'http: {{listen: "{listen}"}}\n')
    code, out = invoke("check", "-c", str(config))
    assert code == 0, out
    assert f"warning: {config}:1:" in out and "binds beyond loopback" in out
    for loopback in ("127.0.0.1:8787", "localhost:8787", "[::1]:8787"):
        config.write_text(f'http: {{listen: "{loopback}"}}\n')
        code, out = invoke("check", "-c", str(config))
        assert code == 0 and "warning" not in out, out
