"""No secret is ever logged or served, in text or JSON logs; JSON logs are one object a line.

A real ``ccbus run`` at debug level, with secrets from all three places
(a systemd credential file, a long environment variable, the config's
``secrets:``) used where they are most likely to leak: in the URL and the
headers of webhook calls to a receiver that is down (so every retry logs
its error), in the inbound webhook's HMAC key (so bad signatures are
logged), and in a rule that puts a secret into a rendered parameter (so
traces and the live view carry it).  Nothing the process writes or serves
may contain any of them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support import CCBUS, answers, free_port, start_ccbus, wait_until, write

from ccbus.sources.webhook import sign

CREDENTIAL = "cred-Sup3r/Secr3t\"token"  # a quote and a slash: escaped differently in JSON
ENV_SECRET = "env-secret-0123456789abcdef"
CONFIG_SECRET = "cfg-hmac-key-ÄÖÜ-42"  # non-ASCII
SECRETS = (CREDENTIAL, ENV_SECRET, CONFIG_SECRET)


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_is_ever_logged_or_served(tmp_path: Path, log_format: str) -> None:
    port, dead_port = free_port(), free_port()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "crm-token").write_text(CREDENTIAL + "\n")
    write(tmp_path / "rules" / "r.yaml", f"""
        rules:
          - name: forward
            on: leak.*
            do:
              - webhook:
                  url: "http://127.0.0.1:{dead_port}/hook?key={{secret('env')}}"
                  headers: {{Authorization: "Bearer {{secret('crm')}}"}}
                  json: {{token: "{{secret('cfg')}}", n: "{{n}}"}}
    """)
    config = write(tmp_path / "ccbus.yaml", f"""
        sources:
          in: {{plugin: webhook, options: {{hmac_secret: "${{credential:crm-token}}"}}}}
        secrets:
          crm: "${{credential:crm-token}}"
          env: "${{CCBUS_TEST_ENV_SECRET}}"
          cfg: "{CONFIG_SECRET}"
        rules: [rules]
        state_dir: state
        log_level: debug
        log_format: {log_format}
        http: {{listen: "127.0.0.1:{port}"}}
        delivery: {{backoff_initial: 0.1, backoff_cap: 0.2, attempts: 3}}
    """)
    log = tmp_path / "ccbus.log"
    env = {"CREDENTIALS_DIRECTORY": str(credentials), "CCBUS_TEST_ENV_SECRET": ENV_SECRET}
    proc = start_ccbus(config, log, env)
    base = f"http://127.0.0.1:{port}"
    served = []
    try:
        wait_until(lambda: answers(f"{base}/readyz"), 30, "ccbus to be ready", log)
        for n in range(3):
            body = json.dumps({"type": "leak.test", "id": f"l{n}", "data": {"n": n}}).encode()
            stamp = str(int(time.time()))
            headers = {"X-Ccbus-Timestamp": stamp,
                       "X-Ccbus-Signature": sign(CREDENTIAL, stamp, body)}
            assert httpx.post(f"{base}/events/in", content=body, headers=headers).status_code == 202
        # a forged request: the refusal is logged
        assert httpx.post(f"{base}/events/in", content=b"{}",
                          headers={"X-Ccbus-Timestamp": "1", "X-Ccbus-Signature": "x"}
                          ).status_code == 401
        # every call retries against the dead receiver and ends as a dead letter
        wait_until(lambda: log.read_text().count("is a dead letter") >= 3, 60,
                   "three dead letters", log)
        # an admin's shell has no $CREDENTIALS_DIRECTORY: status still finds the listener
        status = subprocess.run([CCBUS, "status", "-c", str(config)], capture_output=True,
                                text=True, timeout=60, check=False)
        assert status.returncode == 0, status.stderr
        assert "in (webhook): listening" in status.stdout
        served.append(status.stdout)
        for path in ("/health", "/readyz", "/metrics", "/traces/forward"):
            served.append(httpx.get(base + path, timeout=10).text)
        with httpx.stream("GET", f"{base}/live/stream", timeout=10) as stream:
            text = ""
            for chunk in stream.iter_text():
                text += chunk
                if text.count("event: dead_letter") >= 3 and "event: rule" in text:
                    break
            served.append(text)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    output = log.read_text(encoding="utf-8")
    assert "attempt 1 failed" in output  # the errors that could carry secrets were logged
    traces = json.loads(served[4])
    # the trace holds the reference the outbox stores, not the value
    assert traces["runs"][0]["actions"][0]["params"]["json"]["token"] == "${secret:cfg}"
    for secret in SECRETS:
        escaped = json.dumps(secret)[1:-1]
        for where, text in [("log", output), *[(f"served {i}", t) for i, t in enumerate(served)]]:
            assert secret not in text and escaped not in text, f"{secret!r} leaked in {where}"
    if log_format == "json":
        for line in output.splitlines():
            doc = json.loads(line)
            assert {"time", "level", "logger", "message"} <= doc.keys(), line


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_journald_lines_carry_the_priority_prefix(monkeypatch, capsys, log_format: str) -> None:  # type: ignore[no-untyped-def]
    import logging

    from ccbus.observe.logs import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    try:
        setup_logging("debug", [ENV_SECRET], log_format)  # type: ignore[arg-type]
        logger = logging.getLogger("ccbus.test")
        logger.error("cannot reach https://x/?k=%s", ENV_SECRET)
        logger.debug("detail")
        try:
            raise ValueError(f"bad token {ENV_SECRET}")
        except ValueError:
            logger.warning("with a traceback", exc_info=True)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines  # the traceback is part of its record's one line
    assert lines[0].startswith("<3>") and lines[1].startswith("<7>") and lines[2].startswith("<4>")
    assert ENV_SECRET not in "\n".join(lines)
    if log_format == "json":
        first = json.loads(lines[0][3:])
        assert first["level"] == "error" and first["message"] == "cannot reach https://x/?k=***"
        assert "ValueError: bad token ***" in json.loads(lines[2][3:])["exception"]


def test_a_text_record_is_one_line_whatever_it_holds(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Tracebacks and newlines in messages are escaped: journald makes one entry of each record."""
    import logging

    from ccbus.observe.logs import redact_in_logs, setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    try:
        setup_logging("info", [], "text")
        logger = logging.getLogger("ccbus.test")
        # data quoted in a message tries to forge a second record, and carries a secret
        logger.warning("event from pbx: %s", f"ok\n<3>forged: {ENV_SECRET}\r\nmore")
        redact_in_logs([ENV_SECRET])  # what a config reload does with its new secrets
        logger.warning("event from pbx: %s", f"ok\n<3>forged: {ENV_SECRET}\r\nmore")
        try:
            raise ValueError("first line\nsecond line")
        except ValueError:
            logger.exception("handler failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].endswith(f"event from pbx: ok\\n<3>forged: {ENV_SECRET}\\r\\nmore")
    assert lines[1].endswith("event from pbx: ok\\n<3>forged: ***\\r\\nmore")
    assert "handler failed\\nTraceback (most recent call last):\\n" in lines[2]
    assert lines[2].endswith("ValueError: first line\\nsecond line")
