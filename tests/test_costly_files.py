"""Files on disk that would cost the service its life, and events that fan out without end.

A tester's files (issue #18): a config nested 5,000 levels deep read on
SIGHUP, a rule file nested 10,000 levels deep read by the watcher when it is
merely saved, and a 900-byte rule file of nested YAML aliases that expands to
9**7 values.  Each must be refused with file, line and reason, quickly and
without a memory blow-up, by every path that reads it (``ccbus check``,
SIGHUP and the watcher in a real ``ccbus run``), and the running process
keeps its previous config and rules.  ``ccbus try`` on an event nested 10,000
levels deep says so and exits 1.  One event whose rule emits several events
of its own type fans out to at most ``MAX_DERIVED`` derived events in a real
bus, counted on ``/metrics`` and logged with the rule and the event.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest
from support import CCBUS, answers, free_port, start_ccbus, wait_until, write

from ccbus.config.yamlfile import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, load_yaml
from ccbus.errors import ConfigError
from ccbus.pipeline import MAX_DERIVED, MAX_HOPS

ENV = {**os.environ, "CCBUS_DISABLE_PLUGIN_AUTOLOAD": "1"}


def deep_config(levels: int) -> str:
    """A config whose source options hold a list nested ``levels`` deep (on line 5)."""
    return ("rules: [rules]\nstate_dir: state\nhttp: {enabled: false}\nsources:\n"
            "  x: {plugin: replay, options: {path: e.jsonl, junk: "
            + "[" * levels + "]" * levels + "}}\n")


def deep_rules(levels: int) -> str:
    """A rule file whose one action parameter is nested ``levels`` deep (on line 5)."""
    return ("rules:\n  - name: deep\n    on: a.b\n    do:\n      - log: "
            + "[" * levels + "]" * levels + "\n")


def alias_bomb(width: int = 9, generations: int = 7) -> str:
    """The tester's rule file: ``width ** generations`` values in a few hundred bytes."""
    lines = ["rules:", "  - name: bomb", "    on: a.b", "    do:", "      - emit:",
             "          type: x.y", "          data:",
             "            a0: &a0 [" + ",".join(["x"] * width) + "]"]
    lines += [f"            a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]"
              for i in range(1, generations + 1)]
    return "\n".join(lines) + "\n"


def refusal(text: str, tmp_path: Path) -> str:
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    return str(caught.value)


# -- what one file may cost ----------------------------------------------------------------


def test_deep_nesting_is_refused_with_file_and_line(tmp_path: Path) -> None:
    assert len(alias_bomb()) < 1000
    message = refusal(deep_rules(10_000), tmp_path)
    assert message.startswith(f"{tmp_path / 'f.yaml'}:5:")
    assert f"nested more than {MAX_DEPTH} levels deep" in message
    # nesting within the limit still loads (configs and rules use a handful of levels)
    ok = tmp_path / "ok.yaml"
    ok.write_text("a: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "\n")
    assert load_yaml(ok) is not None


def test_an_alias_bomb_is_refused_at_the_alias_that_crosses_the_limit(tmp_path: Path) -> None:
    message = refusal(alias_bomb(), tmp_path)
    assert re.match(rf"{re.escape(str(tmp_path / 'f.yaml'))}:1[0-9]:\d+: refused: holds more "
                    rf"than {MAX_NODES:,} values once its aliases are expanded", message), message
    # nesting reached through aliases counts as nesting
    chain = "a0: &a0 " + "[" * 40 + "1" + "]" * 40 + "\n" + "".join(
        f"a{i}: &a{i} " + "[" * 40 + f"*a{i - 1}" + "]" * 40 + "\n" for i in range(1, 4))
    assert "nested more than" in refusal(chain, tmp_path)
    # an alias used inside its own anchor would send every walker round forever
    assert "alias *a is used inside its own anchor &a" in refusal("a: &a [1, *a]\n", tmp_path)
    # ordinary anchors and merge keys still work
    ok = tmp_path / "ok.yaml"
    ok.write_text("base: &b {x: 1}\nuse: {<<: *b, y: 2}\nboth: [*b, *b]\n")
    assert load_yaml(ok) == {"base": {"x": 1}, "use": {"x": 1, "y": 2},
                             "both": [{"x": 1}, {"x": 1}]}


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    message = refusal("# filler\n" * (MAX_FILE_BYTES // 9 + 1), tmp_path)
    assert f"refused: larger than {MAX_FILE_BYTES // 1024} KiB" in message


def test_ccbus_check_refuses_each_costly_file_quickly(tmp_path: Path) -> None:
    write(tmp_path / "rules" / "good.yaml", "rules: [{name: good, on: system.alert, do: [log: hi]}]\n")
    (tmp_path / "rules" / "deep.yaml").write_text(deep_rules(10_000))
    (tmp_path / "rules" / "bomb.yaml").write_text(alias_bomb())
    (tmp_path / "ccbus.yaml").write_text(deep_config(5_000))
    (tmp_path / "e.jsonl").write_text("")
    rules = subprocess.run([CCBUS, "check", "--rules", str(tmp_path / "rules")], env=ENV,
                           capture_output=True, text=True, timeout=120)
    assert rules.returncode == 1, rules.stderr[-2000:]
    assert "Traceback" not in rules.stderr
    assert f"{tmp_path / 'rules' / 'deep.yaml'}:5:" in rules.stderr
    assert re.search(rf"{re.escape(str(tmp_path / 'rules' / 'bomb.yaml'))}:\d+:\d+: refused: "
                     "holds more than", rules.stderr), rules.stderr
    assert "2 problem(s) found." in rules.stderr
    config = subprocess.run([CCBUS, "check", "-c", str(tmp_path / "ccbus.yaml")], env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert config.returncode == 1 and "Traceback" not in config.stderr, config.stderr[-2000:]
    assert f"{tmp_path / 'ccbus.yaml'}:5:" in config.stderr
    assert "refused: nested more than" in config.stderr


def test_ccbus_try_refuses_an_event_nested_10000_levels_deep(tmp_path: Path) -> None:
    write(tmp_path / "rules" / "r.yaml", "rules: [{name: r, on: a.b, do: [log: hi]}]\n")
    deep = '{"type": "a.b", "id": "d", "data": {"x": ' + "[" * 10_000 + "]" * 10_000 + "}}"
    for name, text in {"one.json": deep, "array.json": f"[{deep}]",
                       "lines.jsonl": '{"type": "a.b", "id": "ok"}\n' + deep + "\n"}.items():
        (tmp_path / name).write_text(text)
        done = subprocess.run([CCBUS, "try", "--event", str(tmp_path / name), "--rules",
                               str(tmp_path / "rules")], env=ENV, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1, (name, done.stdout, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
        line = 2 if name == "lines.jsonl" else 1
        assert f"{tmp_path / name}:{line}: invalid JSON: JSON is nested too deeply" in done.stderr
        assert "1 failure(s)" in done.stderr
    # the readable event before the deep one was still tried
    assert "would call log(message='hi')" in done.stdout


# -- a running service: SIGHUP and the rule watcher ----------------------------------------


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024  # type: ignore[index]


@pytest.mark.slow
def test_a_running_bus_refuses_costly_files_on_every_reload_and_keeps_running(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "ccbus.log"
    rule_file = write(tmp_path / "rules" / "say.yaml",
                      'rules: [{name: say, on: say.*, do: [log: "said {words}"]}]\n')
    config_text = f"""
        sources:
          in: {{plugin: webhook, options: {{token: costly-files-token}}}}
        rules: [rules]
        state_dir: state
        http: {{listen: "127.0.0.1:{port}"}}
    """
    config = write(tmp_path / "ccbus.yaml", config_text)
    sent = 0

    def say() -> None:
        """An event through the webhook source; the 'say' rule must still log it."""
        nonlocal sent
        sent += 1
        body = {"type": "say.it", "id": f"s{sent}", "data": {"words": f"number {sent}"}}
        answer = httpx.post(f"{base}/events/in", json=body, timeout=10,
                            headers={"Authorization": "Bearer costly-files-token"})
        assert answer.status_code == 202, answer.text
        wait_until(lambda: f"said number {sent}" in log.read_text(), 30, f"event {sent}", log)

    def metric(name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", httpx.get(f"{base}/metrics", timeout=10).text, re.M)
        return float(found[1]) if found else 0.0

    proc = start_ccbus(config, log)
    try:
        wait_until(lambda: answers(f"{base}/readyz"), 60, "ccbus to be ready", log)
        say()

        # the watcher: the rule file saved nested 10,000 levels deep
        rule_file.write_text(deep_rules(10_000))
        wait_until(lambda: "keeping its previous 1 rule(s)" in log.read_text(), 60,
                   "the watcher to refuse the deep rule file", log)
        assert f"{rule_file}:5:" in log.read_text()
        assert "refused: nested more than" in log.read_text()
        assert proc.poll() is None
        say()

        # the watcher: the 900-byte alias bomb, refused fast and without the 2 GB
        before = metric("ccbus_rule_load_errors_total")
        rule_file.write_text(alias_bomb())
        wait_until(lambda: metric("ccbus_rule_load_errors_total") > before, 60,
                   "the watcher to refuse the alias bomb", log)
        assert re.search(rf"{re.escape(str(rule_file))}:\d+:\d+: refused: holds more than",
                         log.read_text())
        assert peak_rss_mb(proc.pid) < 400
        say()

        # SIGHUP with a config nested 5,000 levels deep: refused, the old config stays
        config.write_text(deep_config(5_000))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: metric("ccbus_config_reload_errors_total") >= 1, 60,
                   "the deep config to be refused", log)
        assert f"reload: {config}:5:" in log.read_text()
        assert "reload refused" in log.read_text()
        assert proc.poll() is None and answers(f"{base}/healthz")
        say()

        # SIGHUP with a config of aliases that expands past the limit
        config.write_text(textwrap.dedent(config_text).lstrip()
                          + alias_bomb().replace("rules:", "z:", 1))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: metric("ccbus_config_reload_errors_total") >= 2, 60,
                   "the aliased config to be refused", log)
        assert re.search(rf"reload: {re.escape(str(config))}:\d+:\d+: refused: holds more than",
                         log.read_text())
        say()
        assert peak_rss_mb(proc.pid) < 400
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output and "RecursionError" not in output


# -- fan-out of emit -------------------------------------------------------------------------


@pytest.mark.slow
def test_one_event_fans_out_to_at_most_max_derived_events_in_a_real_bus(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "ccbus.log"
    width = 4  # unbounded, 4 + 4**2 + ... + 4**8 = 87,380 derived events from one
    emits = "".join("      - emit: {type: fan.out}\n" for _ in range(width))
    write(tmp_path / "rules" / "fan.yaml",
          "rules:\n  - name: fan\n    on: fan.out\n    do:\n" + emits
          + '  - {name: say, on: say.*, do: [log: "said {words}"]}\n')
    config = write(tmp_path / "ccbus.yaml", f"""
        sources:
          in: {{plugin: webhook, options: {{token: fan-token}}}}
        rules: [rules]
        state_dir: state
        http: {{listen: "127.0.0.1:{port}"}}
    """)
    headers = {"Authorization": "Bearer fan-token"}
    proc = start_ccbus(config, log)
    try:
        wait_until(lambda: answers(f"{base}/readyz"), 60, "ccbus to be ready", log)
        answer = httpx.post(f"{base}/events/in", json={"type": "fan.out", "id": "f1"},
                            headers=headers, timeout=60)
        assert answer.status_code == 202, answer.text
        text = httpx.get(f"{base}/metrics", timeout=10).text
        dropped = {m[1]: float(m[2]) for m in re.finditer(
            r'^ccbus_emit_dropped_total\{reason="(\w+)",rule="fan"\} (\S+)$', text, re.M)}
        # the first event and each of the MAX_DERIVED derived ones fire 'fan' once
        fired = re.search(r'^ccbus_rule_fired_total\{rule="fan"\} (\S+)$', text, re.M)
        assert fired and float(fired[1]) == 1 + MAX_DERIVED
        assert sum(dropped.values()) == width * (1 + MAX_DERIVED) - MAX_DERIVED, dropped
        assert dropped.get("fan_out", 0) > 0
        wait_until(lambda: "one event may cause at most" in log.read_text(), 30, "the log", log)
        line = next(x for x in log.read_text().splitlines() if "one event may cause" in x)
        assert "rule fan: emit of fan.out dropped while routing event fan.out id=f1" in line
        # a second event: counted again, logged no more than once a minute
        answer = httpx.post(f"{base}/events/in", json={"type": "fan.out", "id": "f2"},
                            headers=headers, timeout=60)
        assert answer.status_code == 202
        answer = httpx.post(f"{base}/events/in", headers=headers, timeout=10,
                            json={"type": "say.it", "id": "s1", "data": {"words": "after"}})
        assert answer.status_code == 202
        wait_until(lambda: "said after" in log.read_text(), 30, "the bus to go on", log)
        assert log.read_text().count("one event may cause at most") == 1
        text = httpx.get(f"{base}/metrics", timeout=10).text
        fired = re.search(r'^ccbus_rule_fired_total\{rule="fan"\} (\S+)$', text, re.M)
        assert fired and float(fired[1]) == 2 * (1 + MAX_DERIVED)
        assert MAX_HOPS == 8  # the docs and this test's arithmetic assume it
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()[-3000:]
