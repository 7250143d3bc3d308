"""Secrets are stored as references and never shown, in any encoding (issue #18, part 2).

The end-to-end test runs a real ``ccbus run`` with distinctive secrets in
every kind of action parameter (a webhook URL path, a query parameter, an
``X-Api-Key`` header, an ``Authorization: Bearer`` header, URL user-info
that becomes ``Authorization: Basic``, an outbound ``hmac_secret``), from
``${credential:...}`` through ``secrets:`` into ``secret("name")``, against
a real HTTP receiver that must get the real values and that echoes each
failing request back (as a debugging proxy would), so the secrets come back
percent-encoded and base64-encoded in error messages.  Calls fail so dead
letters exist and retries are sent from the outbox; a config reload is
refused with a secret in a field of the wrong type; an outbox written
before references existed is delivered.  Then every channel (the stderr
log, ``/metrics``, ``/health``, ``/readyz``, ``/traces``, ``/live/stream``,
``ccbus status``, ``ccbus traces``, ``ccbus dead-letters list/show``,
``ccbus check`` and the bytes of every file in the state directory) is
searched for every encoding of every secret: none may be found.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

import httpx
import pytest
import yarl
from support import CCBUS, answers, free_port, start_ccbus, wait_until, write

from ccbus.config.secrets import SecretBook, UnknownSecret

# Distinctive values, each with characters that percent-encoding, JSON or base64 change.
SECRETS = {
    "path": "PathTok-é+Ω=1~x",  # in the URL path
    "query": "QryTok&é=2/?",  # a query parameter
    "apikey": 'ApiKey"Quo\\te-3',  # X-Api-Key (a quote and a backslash: JSON-escaped)
    "bearer": "BearerTok/4+=Zz",  # Authorization: Bearer
    "password": "PassWörd-5:x",  # URL user-info, sent as Authorization: Basic
    "hmac": "HmacKey-ÿ-6-secret",  # the outbound signature key
    "inbound": "Inbound-Hmac-7-ßecret",  # the inbound webhook source's key (config only)
}
USER = "bob"


def forms(secret: str) -> set[str]:
    """Every encoding of ``secret`` looked for, computed independently of ccbus."""
    found = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    for safe in ("", "/", "/:@!$&'()*+,;=", "?/:@"):
        for encoded in (quote(secret, safe=safe), quote_plus(secret, safe=safe)):
            found |= {encoded, encoded.lower()}
    found.add(yarl.URL.build(scheme="http", host="h", path="/" + secret).raw_path[1:])
    found.add(yarl.URL("http://h/").with_query({"k": secret}).raw_query_string[2:])
    found.add(yarl.URL("http://h/").with_user(USER).with_password(secret).raw_password or "")
    for text in (secret, f"{USER}:{secret}"):
        raw = text.encode()
        found |= {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
        found.add(base64.b64encode(raw).decode().rstrip("="))
    return {f for f in found if f}


class _Echo(BaseHTTPRequestHandler):
    """Records requests; on ``/hook/fail/...`` answers 500 echoing the whole request."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append(  # type: ignore[attr-defined]
            {"target": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
             "body": body}
        )
        if "/fail/" in self.path:
            echo = (self.requestline + "\n" + str(self.headers)).encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(echo)))
            self.end_headers()
            self.wfile.write(echo)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "11")
        self.end_headers()
        self.wfile.write(b'{"ok":true}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _old_outbox(path: Path, url: str) -> None:
    """An outbox as ccbus wrote it before references: no ``secrets`` column, plain values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
            rule TEXT NOT NULL, action TEXT NOT NULL, idx INTEGER NOT NULL, lane TEXT NOT NULL,
            params TEXT NOT NULL, event TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL, next_at REAL NOT NULL, last_error TEXT NOT NULL DEFAULT '');
        CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,
            rule TEXT NOT NULL, action TEXT NOT NULL, idx INTEGER NOT NULL, lane TEXT NOT NULL,
            params TEXT, event TEXT NOT NULL, attempts INTEGER NOT NULL, created REAL NOT NULL,
            failed_at REAL NOT NULL, reason TEXT NOT NULL);
    """)
    params = {"url": url, "headers": {"X-Legacy": "legacy-plain-value"}, "json": {"old": 1}}
    event = {"specversion": "1.0", "id": "old-1", "source": "in", "type": "leak.old",
             "time": "2026-01-01T00:00:00+00:00", "data": {}}
    db.execute(
        "INSERT INTO outbox (key, rule, action, idx, lane, params, event, created, next_at) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        ("in/old-1:forward:0", "forward", "webhook", 0, "webhook:old", json.dumps(params),
         json.dumps(event), time.time(), 0),
    )
    db.commit()
    db.close()


def _sign(secret: str, stamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _run(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([CCBUS, *args], capture_output=True, text=True, timeout=120,
                          check=False, env=env)
    return done.stdout + done.stderr


@pytest.mark.slow
def test_no_secret_is_stored_or_shown_in_any_encoding(tmp_path: Path, receiver: Any) -> None:
    import os

    port = free_port()
    hook = f"127.0.0.1:{receiver.server_address[1]}"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, value in SECRETS.items():
        (credentials / name).write_text(value + "\n", encoding="utf-8")
    write(tmp_path / "rules" / "r.yaml", f"""
        rules:
          - name: forward
            on: leak.*
            do:
              - webhook:
                  url: "http://{USER}:{{secret('password')}}@{hook}/hook/{{mode}}/{{secret('path')}}"
                  query: {{key: "{{secret('query')}}"}}
                  json: {{n: "{{n}}"}}
              - webhook:
                  url: "http://{hook}/hook/{{mode}}/{{secret('path')}}/2"
                  headers:
                    X-Api-Key: "{{secret('apikey')}}"
                    Authorization: "Bearer {{secret('bearer')}}"
                  hmac_secret: "{{secret('hmac')}}"
                  json: {{n: "{{n}}"}}
    """)
    secrets_yaml = "\n".join(
        f"          {name}: \"${{credential:{name}}}\"" for name in SECRETS if name != "inbound"
    )
    config_text = f"""
        sources:
          in: {{plugin: webhook, options: {{hmac_secret: "${{credential:inbound}}"}}}}
        secrets:
{secrets_yaml}
        rules: [rules]
        event_types: [leak.*]   # what the test posts to the webhook source
        state_dir: state
        log_level: debug
        http: {{listen: "127.0.0.1:{port}"}}
        delivery: {{backoff_initial: 0.1, backoff_cap: 0.2, attempts: 2}}
    """
    config = write(tmp_path / "ccbus.yaml", config_text)
    # an outbox from before references: its plain row must still be delivered
    _old_outbox(tmp_path / "state" / "delivery.sqlite3", f"http://{hook}/hook/old")
    log = tmp_path / "ccbus.log"
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    full_env = {**os.environ, **env, "CCBUS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = start_ccbus(config, log, env)
    base = f"http://127.0.0.1:{port}"
    shown: dict[str, str] = {}
    live: list[str] = []

    def read_live() -> None:
        try:
            with httpx.stream("GET", f"{base}/live/stream", timeout=60) as stream:
                for chunk in stream.iter_text():
                    live.append(chunk)
                    if "".join(live).count("event: dead_letter") >= 4:
                        return
        except httpx.HTTPError:
            return

    def post(doc: dict[str, Any]) -> int:
        body = json.dumps(doc).encode()
        stamp = str(int(time.time()))
        headers = {"X-Ccbus-Timestamp": stamp,
                   "X-Ccbus-Signature": _sign(SECRETS["inbound"], stamp, body)}
        return httpx.post(f"{base}/events/in", content=body, headers=headers).status_code

    try:
        wait_until(lambda: answers(f"{base}/readyz"), 60, "ccbus to be ready", log)
        reader = threading.Thread(target=read_live, daemon=True)
        reader.start()
        time.sleep(0.5)  # the reader is subscribed before the events come
        for n, mode in enumerate(["fail", "fail", "ok", "ok"]):
            assert post({"type": "leak.test", "id": f"e{n}", "data": {"n": n, "mode": mode}}) == 202
        assert httpx.post(f"{base}/events/in", content=b"{}",  # forged: refused and logged
                          headers={"X-Ccbus-Timestamp": "1", "X-Ccbus-Signature": "x"}
                          ).status_code == 401
        wait_until(lambda: log.read_text(encoding="utf-8").count("is a dead letter") >= 4, 90,
                   "four dead letters", log)
        wait_until(lambda: len(receiver.requests) >= 13, 30, "every call", log)
        # a reload with a secret in a field of the wrong type is refused without quoting it
        write(config, config_text.replace("state_dir: state",
                                          "state_dir: state\n        dedup_window: "
                                          "\"${credential:bearer}\""))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in log.read_text(encoding="utf-8"), 30,
                   "the reload to be refused", log)
        write(config, config_text)
        reader.join(30)
        for path in ("/health", "/readyz", "/metrics", "/traces", "/traces/forward"):
            shown[path] = httpx.get(base + path, timeout=10).text
        shown["/live/stream"] = "".join(live)
        shown["ccbus status"] = _run("status", "-c", str(config))
        shown["ccbus traces"] = _run("traces", "forward", "-c", str(config))
        shown["ccbus traces --json"] = _run("traces", "forward", "--json", "-c", str(config))
        shown["ccbus dead-letters list"] = _run("dead-letters", "list", "-c", str(config))
        ids = [line.split()[0] for line in shown["ccbus dead-letters list"].splitlines()
               if line.strip()[:1].isdigit()]
        assert len(ids) >= 4, shown["ccbus dead-letters list"]
        shown["ccbus dead-letters show"] = _run("dead-letters", "show", *ids, "-c", str(config))
        shown["ccbus check"] = _run("check", "-c", str(config), env=full_env)
        bad = write(tmp_path / "bad.yaml", config_text.replace(
            "state_dir: state", "state_dir: state\n        traces: \"${credential:bearer}\"\n"
            "        dedup_window: \"${credential:query}\""))
        shown["ccbus check (bad)"] = _run("check", "-c", str(bad), env=full_env)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    shown["stderr log"] = log.read_text(encoding="utf-8")
    for path in sorted((tmp_path / "state").rglob("*")):
        if path.is_file():
            shown[f"file {path.name}"] = path.read_bytes().decode("latin-1")  # bytes as is

    leaks = [
        f"{name} as {form!r} in {where}"
        for name, secret in SECRETS.items()
        for form in forms(secret)
        for where, text in shown.items()
        if form in text or (where.startswith("file") and form.encode().decode("latin-1") in text)
    ]
    assert leaks == []
    # the receiver got the real values, first attempts and retries from the outbox alike
    calls = [r for r in receiver.requests if "/hook/old" not in r["target"]]
    assert len(calls) == 12  # 2 failing events x 2 calls x 2 attempts, 2 good x 2 calls
    basic = "Basic " + base64.b64encode(f"{USER}:{SECRETS['password']}".encode()).decode()
    for request in calls:
        target = urlsplit(request["target"])
        assert unquote(target.path).split("/")[3] == SECRETS["path"], request["target"]
        if request["target"].split("?")[0].endswith("/2"):
            headers = request["headers"]
            assert headers["x-api-key"] == SECRETS["apikey"]
            assert headers["authorization"] == "Bearer " + SECRETS["bearer"]
            assert headers["x-ccbus-signature"] == _sign(
                SECRETS["hmac"], headers["x-ccbus-timestamp"], request["body"])
        else:
            assert dict(parse_qsl(target.query))["key"] == SECRETS["query"]
            assert request["headers"]["authorization"] == basic
    old = [r for r in receiver.requests if "/hook/old" in r["target"]]
    assert len(old) == 1 and old[0]["headers"]["x-legacy"] == "legacy-plain-value"
    # what is shown says which secret went where
    assert "${secret:path}" in shown["ccbus dead-letters show"]
    assert "${secret:hmac}" in shown["/traces/forward"]
    assert "not a duration: '***'" in shown["ccbus check (bad)"]
    assert "OK:" in shown["ccbus check"]


def test_sealed_parameters_resolve_only_the_recorded_places() -> None:
    """Text an event puts into a parameter that looks like a reference stays text:
    unsealing cannot be made to pull another secret out."""
    book = SecretBook({"secret:a": "alpha-value-1", "secret:b": "beta-value-2"})
    doc = {"body": "caller ${secret:b} says alpha-value-1", "n": [1, "alpha-value-1%2F"]}
    sealed, refs = book.seal(json.loads(json.dumps(doc)))
    assert sealed["body"] == "caller ${secret:b} says ${secret:a}"
    assert "alpha-value-1" not in json.dumps(sealed)
    assert book.unseal(json.loads(json.dumps(sealed)), refs) == doc  # ${secret:b} stays text
    with pytest.raises(UnknownSecret):
        SecretBook({"secret:b": "x"}).unseal(sealed, refs)


def test_a_rotated_secret_is_sent_by_calls_already_waiting() -> None:
    book = SecretBook({"credential:tok": "old-token-value"})
    sealed, refs = book.seal_json('{"h": {"Authorization": "Bearer old-token-value"}}')
    assert "old-token-value" not in sealed and refs
    book.add({"credential:tok": "new-token-value"})
    assert json.loads(book.unseal_json(sealed, refs)) == {
        "h": {"Authorization": "Bearer new-token-value"}}
    assert book.redact("old-token-value new-token-value") == "*** ***"  # both stay masked


def test_redaction_covers_percent_json_and_basic_encodings() -> None:
    secret = "Pä ss/wörd+1"
    book = SecretBook({"secret:pw": secret})
    basic = base64.b64encode(f"someone:{secret}".encode()).decode()
    text = (f"GET /x/{quote(secret)}?k={quote_plus(secret)} {json.dumps(secret)} "
            f"Authorization: Basic {basic}")
    shown = book.redact(text)
    assert [f for f in forms(secret) if f in shown] == []
    assert shown.startswith("GET /x/***?k=*** ")


def test_try_shows_the_reference_the_outbox_would_record(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ccbus.cli.app import cli
    from ccbus.plugins import PluginHost

    write(tmp_path / "rules" / "r.yaml", """
        rules:
          - name: forward
            on: leak.*
            do:
              - webhook:
                  url: "https://crm.example/hook/{secret('path')}"
                  headers: {Authorization: "Bearer {secret('bearer')}"}
    """)
    config = write(tmp_path / "ccbus.yaml", f"""
        secrets: {{path: "{SECRETS['path']}", bearer: "{SECRETS['bearer']}"}}
        rules: [rules]
        state_dir: state
    """)
    event = write(tmp_path / "e.json", '{"type": "leak.test", "id": "1", "data": {}}')
    result = CliRunner().invoke(cli, ["try", "-c", str(config), "--event", str(event)],
                                obj={"plugins": PluginHost(autoload=False)})
    assert "https://crm.example/hook/${secret:path}" in result.output, result.output
    assert [f for s in SECRETS.values() for f in forms(s) if f in result.output] == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_call_whose_secret_is_gone_is_a_dead_letter_not_a_placeholder_sent(
    tmp_path: Path, anyio_backend: str
) -> None:
    """A row refers to ``secret:tok``; the config the bus starts with has no such secret:
    the call is dead-lettered with the reason, and nothing is sent."""
    import anyio
    from test_delivery import Flaky, go, make_bus, outbox, running, wait_for

    from ccbus.delivery.store import Pending

    book = SecretBook({"secret:tok": "gone-token-value"})
    params, refs = book.seal_json('{"lane": "a", "value": "Bearer gone-token-value"}')
    assert refs and "gone-token-value" not in params
    flaky = Flaky()
    bus = make_bus(tmp_path, flaky)  # creates the outbox; its config has no secrets
    store = outbox(tmp_path)
    event = json.dumps({"specversion": "1.0", "id": "x1", "source": "test", "type": "t.go",
                        "time": "2026-01-01T00:00:00+00:00", "data": {}})
    store.add([Pending(key="test/x1:go:0", rule="go", action="flaky", index=0, lane="lane:a",
                       params=params, event=event, created=time.time(), secrets=refs)])

    async def body() -> None:
        await bus.publish(go(value="plain"))
        await wait_for(lambda: outbox(tmp_path).dead_count() == 1)
        await anyio.sleep(0.1)

    await running(bus, body)
    assert [value for value, _, _ in flaky.delivered] == ["plain"]
    [letter] = outbox(tmp_path).dead_letters()
    assert "the secret secret:tok is no longer configured" in letter.reason
    assert letter.secrets == refs  # kept: retried once the secret is back, it sends


def test_dead_letters_an_earlier_version_wrote_are_shown_masked(tmp_path: Path) -> None:
    """A dead letter from before references holds plain values: with the config at hand,
    ``list`` and ``show`` mask them (percent-encoded in the reason too)."""
    from click.testing import CliRunner

    from ccbus.cli.app import cli
    from ccbus.plugins import PluginHost

    secret = SECRETS["path"]
    state = tmp_path / "state" / "delivery.sqlite3"
    _old_outbox(state, "http://127.0.0.1:9/unused")
    db = sqlite3.connect(state)
    db.execute(
        "INSERT INTO dead_letters (key, rule, action, idx, lane, params, event, attempts, "
        "created, failed_at, reason) VALUES ('k', 'forward', 'webhook', 0, 'l', ?, '{}', 3, 0, 0, ?)",
        (json.dumps({"url": f"https://crm.example/hook/{secret}"}),
         f"HTTP 500 from POST /hook/{quote(secret)}"),
    )
    db.commit()
    db.close()
    config = write(tmp_path / "ccbus.yaml", f"""
        secrets: {{path: "{secret}"}}
        state_dir: state
    """)
    runner = CliRunner()
    for args in (["list"], ["show", "1"]):
        result = runner.invoke(cli, ["dead-letters", *args, "-c", str(config)],
                               obj={"plugins": PluginHost(autoload=False)})
        assert result.exit_code == 0, result.output
        assert "hook/***" in result.output
        assert [f for f in forms(secret) if f in result.output] == [], result.output
