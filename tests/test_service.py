"""``ccbus run`` under a stand-in for systemd: a real AF_UNIX datagram socket as NOTIFY_SOCKET.

The test plays systemd's part: it binds the socket, starts a real ``ccbus
run`` with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` set, and reads what
arrives: READY=1 once the sources run, WATCHDOG=1 at about half the
watchdog period, RELOADING=1 with MONOTONIC_USEC then READY=1 around a
SIGHUP (a broken config is refused, the old one keeps running), and
STOPPING=1 on SIGTERM, after which the process exits 0.  A reload makes
the checks ``ccbus run`` makes (a notify target apprise rejects is
refused) and hides the secrets the new file brings.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from http_receiver import HttpReceiver
from support import REPO, answers, free_port, start_ccbus, wait_until, write

from ccbus.runtime.systemd import Notifier

WATCHDOG_USEC = 1_000_000  # systemd would ask for WATCHDOG=1 at least every second


class FakeSystemd:
    """The receiving end of the notify protocol, bound in a temporary directory."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = path
        self.messages: list[tuple[float, dict[str, str]]] = []

    def pump(self) -> None:
        try:
            while True:
                data = self.sock.recv(4096)
                fields = dict(line.split("=", 1) for line in data.decode().splitlines())
                self.messages.append((time.monotonic(), fields))
        except (TimeoutError, BlockingIOError):
            pass

    def wait_for(self, key: str, value: str | None = None, *, after: int = 0,
                 timeout: float = 30.0, log: Path | None = None) -> dict[str, str]:
        def found() -> dict[str, str] | None:
            self.pump()
            for _, fields in self.messages[after:]:
                if key in fields and (value is None or fields[key] == value):
                    return fields
            return None

        wait_until(found, timeout, f"{key}={value or '*'} on NOTIFY_SOCKET", log)
        result = found()
        assert result is not None
        return result

    def close(self) -> None:
        self.sock.close()


def test_notifier_speaks_to_an_abstract_socket_and_ignores_a_foreign_watchdog() -> None:
    name = f"ccbus-test-{os.getpid()}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    receiver.settimeout(5)
    env = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}
    notifier = Notifier.from_environment(env)
    assert env == {}  # read once, then removed so child processes cannot speak for us
    assert notifier.watchdog_interval is None  # the watchdog belongs to process 1, not us
    assert notifier.ready("all good\nsecond line")
    assert receiver.recv(4096) == b"READY=1\nSTATUS=all good second line"
    receiver.close()
    notifier.close()
    assert not Notifier.from_environment({}).ready()  # not under systemd: a no-op


@pytest.mark.slow
def test_notify_protocol_with_a_real_ccbus_process(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "ccbus.log"
    write(tmp_path / "rules" / "r.yaml", "rules: [{name: r, on: a.*, do: [log: '{event.type}']}]\n")
    config = write(tmp_path / "ccbus.yaml", f"""
        sources:
          in: {{plugin: webhook, options: {{token: notify-test-token}}}}
        rules: [rules]
        state_dir: state
        http: {{listen: "127.0.0.1:{port}"}}
    """)
    systemd = FakeSystemd(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    proc = start_ccbus(config, log, env)
    try:
        ready = systemd.wait_for("READY", "1", log=log)
        assert "STATUS" in ready and "1/1 sources" in ready["STATUS"], ready
        assert answers(f"http://127.0.0.1:{port}/readyz")  # READY=1 comes after the listener

        # WATCHDOG=1 at half of WATCHDOG_USEC: wait for several beats and look at the gaps
        start = len(systemd.messages)
        wait_until(lambda: (systemd.pump(), sum("WATCHDOG" in f for _, f in
                                                 systemd.messages[start:]) >= 6)[1],
                   30, "six watchdog beats", log)
        beats = [t for t, f in systemd.messages[start:] if f.get("WATCHDOG") == "1"]
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
        # 0.5 s expected; a busy 2-core machine may delay a beat, never hurry one
        assert 0.35 <= statistics.median(gaps) <= 0.9, gaps

        # a broken config on SIGHUP: RELOADING=1, refused with reasons, READY=1 again
        good = config.read_text()
        config.write_text(good.replace("sources:", "sourcez:"))
        mark = len(systemd.messages)
        proc.send_signal(signal.SIGHUP)
        reloading = systemd.wait_for("RELOADING", "1", after=mark, log=log)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        systemd.wait_for("READY", "1", after=mark, log=log)
        wait_until(lambda: "reload refused" in log.read_text(), 10, "the refusal", log)
        assert "sourcez" in log.read_text()
        assert answers(f"http://127.0.0.1:{port}/readyz")  # the old config keeps running

        # a good one with a new rule: applied
        config.write_text(good)
        write(tmp_path / "rules" / "more.yaml", "rules: [{name: r2, on: b.*, do: [log: x]}]\n")
        mark = len(systemd.messages)
        proc.send_signal(signal.SIGHUP)
        systemd.wait_for("RELOADING", "1", after=mark, log=log)
        systemd.wait_for("READY", "1", after=mark, log=log)
        traces = httpx.get(f"http://127.0.0.1:{port}/traces", timeout=5).json()
        assert traces["rules"] == ["r", "r2"]

        mark = len(systemd.messages)
        proc.send_signal(signal.SIGTERM)
        systemd.wait_for("STOPPING", "1", after=mark, log=log)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        systemd.close()


RELOAD_SECRET = "reload-secret-0123456789abcdef"  # referred to only by the reloaded file


@pytest.mark.slow
def test_a_reload_makes_the_plugins_checks_and_hides_the_new_secrets(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "ccbus.log"
    write(tmp_path / "rules" / "r.yaml", """
        rules:
          - {name: page, on: page.*, do: [notify: {to: [ops], body: "{words}"}]}
          - {name: say, on: say.*, do: [log: "said {words}"]}
    """)
    config_text = """
        sources:
          in: {{plugin: webhook, options: {{token: reload-test-token}}}}
        targets:
          ops: "{ops}"
        rules: [rules]
        state_dir: state
        http: {{listen: "127.0.0.1:{port}"}}
    """
    headers = {"Authorization": "Bearer reload-test-token"}

    def post(kind: str, ident: str, words: str) -> None:
        body = {"type": f"{kind}.test", "id": ident, "data": {"words": words}}
        answer = httpx.post(f"{base}/events/in", json=body, headers=headers, timeout=10)
        assert answer.status_code == 202, answer.text

    def reload(ops: str, number: int) -> None:
        """Write the config with target ``ops``, SIGHUP, wait until the reload is done."""
        write(tmp_path / "ccbus.yaml", config_text.format(ops=ops, port=port))
        proc.send_signal(signal.SIGHUP)
        done = f"ccbus_rule_reloads_total {1 + number}\n"  # the rules reload last, every time
        wait_until(lambda: done in httpx.get(f"{base}/metrics", timeout=10).text, 30,
                   f"reload {number}", log)

    with HttpReceiver() as receiver:
        config = write(tmp_path / "ccbus.yaml", config_text.format(
            ops=f"json://127.0.0.1:{receiver.port}/old", port=port))
        proc = start_ccbus(config, log, {"CCBUS_TEST_RELOAD_SECRET": RELOAD_SECRET})
        try:
            wait_until(lambda: answers(f"{base}/readyz"), 30, "ccbus to be ready", log)

            # a target apprise rejects: `ccbus run` would not start with it, so a reload refuses it
            reload("nosuchscheme://ops.example.com", 1)
            assert (f"reload: {config}:4:3: targets.ops: apprise does not accept this URL "
                    "(nosuchscheme://...)") in log.read_text()
            assert "ccbus_config_reload_errors_total 1\n" in httpx.get(f"{base}/metrics").text
            post("page", "p1", "still the old target")
            [first] = receiver.wait_for(1, timeout=30)
            assert first.path == "/old" and first.json()["message"] == "still the old target"

            # a good file that brings a secret: applied, and the secret is hidden from then on
            reload(f"json://127.0.0.1:{receiver.port}/new/${{CCBUS_TEST_RELOAD_SECRET}}", 2)
            post("page", "p2", "the new target")
            second = receiver.wait_for(2, timeout=30)[1]
            assert second.path == f"/new/{RELOAD_SECRET}"  # the target really changed
            post("say", "s1", f"the key is {RELOAD_SECRET}")
            wait_until(lambda: "said the key is ***" in log.read_text(), 30, "the log line", log)
            trace = httpx.get(f"{base}/traces/say", timeout=10).json()
            assert trace["runs"][0]["actions"][0]["params"]["message"] == "said the key is ***"
            served = httpx.get(f"{base}/health", timeout=10).text + str(trace)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    output = log.read_text()
    assert output.count("reload refused") == 1, output[-3000:]  # the second reload was applied
    assert RELOAD_SECRET not in output and RELOAD_SECRET not in served


def test_the_shipped_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian package systemd; .ci/run installs it)"
    unit = (REPO / "examples" / "ccbus.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "LoadCredential=" in unit
    # verify resolves ExecStart: point it at this checkout's ccbus
    (tmp_path / "ccbus.service").write_text(
        unit.replace("/opt/ccbus/bin/ccbus", str(Path(os.sys.executable).parent / "ccbus")))
    result = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "ccbus.service")],
                            capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "ccbus.service" in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr
