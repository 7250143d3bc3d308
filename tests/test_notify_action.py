"""The built-in ``notify`` action against real peers: SMTP, HTTP, and Slack's wire format.

Nothing of apprise is mocked.  Mail goes to an aiosmtpd server on
loopback, ``json://`` posts to an ``http.server`` in a thread (the
recording ``HttpReceiver`` where answers are scripted), and Slack's
webhook endpoint (a class attribute of apprise's Slack plugin) is pointed
at that same local server, so the request apprise would send to
hooks.slack.com is the one it actually sends here.
"""

from __future__ import annotations

import base64
import email
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword
from http_receiver import HttpReceiver
from support import write

from ccbus import ActionSpec, Event
from ccbus.actions import notify as notify_action
from ccbus.actions.api import ActionContext
from ccbus.actions.notify import NotifyParams, parse_target
from ccbus.config.file import load_config
from ccbus.delivery.store import SqliteDeliveryStore
from ccbus.errors import PermanentActionError, RetryableActionError
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

pytestmark = pytest.mark.anyio

SLACK_TOKENS = "T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost(autoload=False)


@pytest.fixture(scope="module")
def spec(host: PluginHost) -> ActionSpec:
    spec: ActionSpec = host.actions["notify"]
    return spec


def context(targets: dict[str, str], key: str = "evt-1:rule:0") -> ActionContext:
    return ActionContext(
        rule="test-rule",
        event=Event(type="test.event", source="tests"),
        idempotency_key=key,
        log=logging.getLogger("ccbus.test.notify"),
        targets=targets,
    )


async def notify(spec: ActionSpec, ctx: ActionContext, **params: Any) -> None:
    await spec.run(spec.params.model_validate(params), ctx)


# ---------------------------------------------------------------------------
# Peers


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpPeer:
    """A local HTTP server that records requests and answers as told, per path prefix."""

    port: int = 0
    requests: list[Request] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)  # path prefix -> status
    reply: bytes = b"ok"
    delay: float = 0.0

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def answer(self, path: str) -> int:
        return next((s for p, s in self.status.items() if path.startswith(p)), 200)


@pytest.fixture
def http_peer() -> Iterator[HttpPeer]:
    peer = HttpPeer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            peer.requests.append(Request("POST", self.path, dict(self.headers), body))
            if peer.delay:
                time.sleep(peer.delay)
            self.send_response(peer.answer(self.path))
            self.send_header("Content-Length", str(len(peer.reply)))
            self.end_headers()
            self.wfile.write(peer.reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    peer.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield peer
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as r:
        yield r


@dataclass
class SmtpPeer:
    port: int
    messages: list[Envelope] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=(data.login, data.password) == (b"bot", b"s3cret-pw"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def smtp_peer() -> Iterator[SmtpPeer]:
    peer = SmtpPeer(port=free_port())
    controller = Controller(
        peer,
        hostname="127.0.0.1",
        port=peer.port,
        authenticator=peer.authenticate,
        auth_require_tls=False,  # plain SMTP on loopback: mailto://, not mailtos://
    )
    controller.start()
    yield peer
    controller.stop()


def text_of(message: Message) -> str:
    parts = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


# ---------------------------------------------------------------------------
# Delivery


async def test_email_arrives_at_a_real_smtp_server(spec: ActionSpec, smtp_peer: SmtpPeer) -> None:
    url = (
        f"mailto://bot:s3cret-pw@127.0.0.1:{smtp_peer.port}"
        "?from=ccbus@example.com&to=ops@example.com"
    )
    ctx = context({"ops-mail": url})
    await notify(spec, ctx, to="ops-mail", title="Queue sales", body="5 callers gave up")

    assert smtp_peer.logins == [(b"bot", b"s3cret-pw")]
    [envelope] = smtp_peer.messages
    assert envelope.mail_from == "ccbus@example.com"
    assert envelope.rcpt_tos == ["ops@example.com"]
    assert isinstance(envelope.content, bytes)
    message = email.message_from_bytes(envelope.content)
    assert message["Subject"] == "Queue sales"
    assert text_of(message).strip() == "5 callers gave up"


async def test_json_post_carries_title_body_type_and_attachment(
    spec: ActionSpec, http_peer: HttpPeer, tmp_path: Path
) -> None:
    report = write(tmp_path / "report.csv", "queue,abandoned\nsales,5\n")
    await notify(
        spec,
        context({}),
        to=f"json://{http_peer.base}/hooks/ccbus",  # a raw URL, no config target
        title="Queue sales",
        body="5 callers gave up",
        attach=[str(report)],
    )

    [request] = http_peer.requests
    assert request.path == "/hooks/ccbus"
    posted = request.json()
    assert posted["title"] == "Queue sales"
    assert posted["message"] == "5 callers gave up"
    assert posted["type"] == "info"
    [attachment] = posted["attachments"]
    assert attachment["filename"] == "report.csv"
    assert base64.b64decode(attachment["base64"]) == report.read_bytes()


async def test_markdown_is_converted_for_an_html_service(
    spec: ActionSpec, smtp_peer: SmtpPeer
) -> None:
    url = f"mailto://bot:s3cret-pw@127.0.0.1:{smtp_peer.port}?from=a@example.com&to=b@example.com"
    await notify(spec, context({"mail": url}), to="mail", body="**5** callers", format="markdown")
    message = email.message_from_bytes(smtp_peer.messages[0].content)  # type: ignore[arg-type]
    html = next(p for p in message.walk() if p.get_content_type() == "text/html")
    assert "<strong>5</strong>" in html.get_payload(decode=True).decode()  # type: ignore[union-attr]


async def test_a_500_is_retryable_with_apprise_reason_and_no_secret(
    spec: ActionSpec, http_peer: HttpPeer, caplog: pytest.LogCaptureFixture
) -> None:
    http_peer.status["/"] = 500
    secret_url = f"json://svc:Pa55w0rdXYZ@{http_peer.base}/hook/tok-ABCDEF123456"
    caplog.set_level(logging.DEBUG)  # even at DEBUG, no secret may be logged

    with pytest.raises(RetryableActionError) as caught:
        await notify(spec, context({"crm-hook": secret_url}), to="crm-hook", body="hello")

    message = str(caught.value)
    assert "crm-hook" in message and "error=500" in message  # apprise's own reason
    assert len(http_peer.requests) == 1
    for secret in ("Pa55w0rdXYZ", "tok-ABCDEF123456"):
        assert secret not in message
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("status", "refused"),
    [(400, True), (401, True), (403, True), (404, True), (410, True),
     (408, False), (429, False), (500, False), (503, False)],
)
async def test_a_4xx_is_permanent_but_408_429_and_5xx_are_retried(
    spec: ActionSpec, receiver: HttpReceiver, status: int, refused: bool
) -> None:
    receiver.respond(status, "nope", path="/hook")
    ctx = context({"crm-hook": f"json://127.0.0.1:{receiver.port}/hook"}, key=f"evt-{status}")
    with pytest.raises((PermanentActionError, RetryableActionError)) as caught:
        await notify(spec, ctx, to="crm-hook", body="hello")
    assert isinstance(caught.value, PermanentActionError) is refused
    assert "crm-hook: " in str(caught.value) and f"error={status}" in str(caught.value)
    assert ("not retried" in str(caught.value)) is refused


async def test_a_call_where_one_target_refuses_is_retried_until_only_refusals_are_left(
    spec: ActionSpec, receiver: HttpReceiver
) -> None:
    base = f"json://127.0.0.1:{receiver.port}"
    targets = {"gone": f"{base}/gone", "busy": f"{base}/busy"}
    receiver.respond(404, "no such hook", path="/gone").fail(1, 503, path="/busy")
    ctx = context(targets, key="evt-mixed:rule:0")

    with pytest.raises(RetryableActionError) as first:  # busy may accept later
        await notify(spec, ctx, to=["gone", "busy"], body="hello")
    assert "2 of 2" in str(first.value)
    with pytest.raises(PermanentActionError) as second:  # busy accepted; gone refuses
        await notify(spec, ctx, to=["gone", "busy"], body="hello")
    assert "1 of 2" in str(second.value) and "gone: " in str(second.value)
    assert "error=404" in str(second.value) and "busy" not in str(second.value)
    # apprise notifies the targets of one call concurrently: order within a call varies
    requests = [(r.path, r.status) for r in receiver.requests]
    assert sorted(requests[:2]) == [("/busy", 503), ("/gone", 404)]
    assert sorted(requests[2:]) == [("/busy", 200), ("/gone", 404)]


async def test_through_the_outbox_a_404_is_a_dead_letter_after_one_attempt_a_503_is_retried(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    """The delivery layer's view: the refusal is buried at once, the outage retried."""
    receiver.respond(404, "no such hook", path="/gone").fail(2, 503, path="/busy")
    write(tmp_path / "rules" / "r.yaml", """
        rules:
          - name: tell
            on: t.go
            do:
              - notify: {to: gone, body: "{n}"}
              - notify: {to: busy, body: "{n}"}
    """)
    config = write(tmp_path / "ccbus.yaml", f"""
        http: {{enabled: false}}
        state_dir: state
        targets:
          gone: "json://127.0.0.1:{receiver.port}/gone"
          busy: "json://127.0.0.1:{receiver.port}/busy"
        rules: [rules]
        delivery: {{backoff_initial: 0.05, backoff_cap: 0.1, attempts: 5}}
    """)
    bus = Bus(load_config(config), PluginHost(autoload=False))
    store = SqliteDeliveryStore(tmp_path / "state" / "delivery.sqlite3")

    def delivered_to_busy() -> bool:
        return any(r.path == "/busy" and r.status == 200 for r in receiver.requests)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        await bus.publish(Event(type="t.go", source="test", data={"n": 1}))
        with anyio.fail_after(10):
            while not (store.dead_count() == 1 and delivered_to_busy()):
                await anyio.sleep(0.02)
        bus.stop()

    [letter] = store.dead_letters()
    assert (letter.rule, letter.index, letter.attempts) == ("tell", 0, 1)
    assert "gone: " in letter.reason and "error=404" in letter.reason
    assert "not retried" in letter.reason
    assert [r.status for r in receiver.requests if r.path == "/gone"] == [404]
    assert [r.status for r in receiver.requests if r.path == "/busy"] == [503, 503, 200]
    assert store.pending_count() == 0


async def test_a_partly_failed_call_is_retried_for_the_failed_targets_only(
    spec: ActionSpec, http_peer: HttpPeer
) -> None:
    targets = {"good": f"json://{http_peer.base}/good", "flaky": f"json://{http_peer.base}/flaky"}
    http_peer.status["/flaky"] = 503
    ctx = context(targets, key="evt-partial:rule:0")

    with pytest.raises(RetryableActionError) as caught:
        await notify(spec, ctx, to=["good", "flaky"], body="hello")
    assert "1 of 2" in str(caught.value) and "flaky:" in str(caught.value)
    assert "good:" not in str(caught.value)

    http_peer.status["/flaky"] = 200
    await notify(spec, ctx, to=["good", "flaky"], body="hello")  # the retry
    assert sorted(http_peer.paths()) == ["/flaky", "/flaky", "/good"]


async def test_notify_does_not_block_the_event_loop(spec: ActionSpec, http_peer: HttpPeer) -> None:
    http_peer.delay = 0.5
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await notify(spec, context({}), to=f"json://{http_peer.base}/slow", body="hello")
        tg.cancel_scope.cancel()
    assert ticks >= 20  # a blocked loop would tick once or twice


# ---------------------------------------------------------------------------
# Slack


async def test_slack_request_is_formed_as_slack_expects(
    spec: ActionSpec, http_peer: HttpPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apprise.plugins.slack import NotifySlack

    # apprise's own endpoint setting, pointed at the local peer instead of Slack.
    monkeypatch.setattr(NotifySlack, "webhook_url", f"http://{http_peer.base}/services")
    ctx = context({"ops-slack": f"slack://{SLACK_TOKENS}/#ops"})
    await notify(spec, ctx, to="ops-slack", title="Queue sales", body="5 callers gave up")

    [request] = http_peer.requests
    assert request.path == f"/services/{SLACK_TOKENS}"
    assert request.headers["Content-Type"].startswith("application/json")
    payload = request.json()
    assert payload["channel"] == "#ops"
    [attachment] = payload["attachments"]
    assert attachment["title"] == "Queue sales"
    assert attachment["text"] == "5 callers gave up"


async def test_slack_native_webhook_url_is_sent_to_the_same_endpoint(
    spec: ActionSpec, http_peer: HttpPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apprise.plugins.slack import NotifySlack

    monkeypatch.setattr(NotifySlack, "webhook_url", f"http://{http_peer.base}/services")
    url = f"https://hooks.slack.com/services/{SLACK_TOKENS}"
    await notify(spec, context({"s": url}), to="s", body="hello")
    assert http_peer.paths() == [f"/services/{SLACK_TOKENS}"]
    assert "hello" in json.dumps(http_peer.requests[0].json())


# ---------------------------------------------------------------------------
# Targets, tags, lanes, parameters


async def test_unknown_target_is_permanent_and_lists_the_known_ones(spec: ActionSpec) -> None:
    ctx = context({"ops-slack": f"slack://{SLACK_TOKENS}/#ops", "ops-mail": "mailto://x@y.z"})
    with pytest.raises(PermanentActionError) as caught:
        await notify(spec, ctx, to="sales-slack", body="hello")
    message = str(caught.value)
    assert "'sales-slack'" in message and "ops-mail, ops-slack" in message
    assert SLACK_TOKENS.split("/")[2] not in message


async def test_a_target_apprise_rejects_is_permanent_and_named_without_its_secret(
    spec: ActionSpec,
) -> None:
    ctx = context({"broken": "slack://T1JJ3T3L2/only-two-tokens-S3CRET"})
    with pytest.raises(PermanentActionError) as caught:
        await notify(spec, ctx, to="broken", body="hello")
    assert "'broken'" in str(caught.value) and "slack://..." in str(caught.value)
    assert "S3CRET" not in str(caught.value)

    with pytest.raises(PermanentActionError) as raw:
        await notify(spec, context({}), to="nosuchscheme://user:hunter2pw@host", body="x")
    assert "nosuchscheme://..." in str(raw.value) and "hunter2pw" not in str(raw.value)


async def test_tags_select_config_targets(spec: ActionSpec, http_peer: HttpPeer) -> None:
    targets = {
        "day": f"ops = json://{http_peer.base}/day",
        "night": f"ops, Night = json://{http_peer.base}/night",
        "untagged": f"json://{http_peer.base}/untagged",
    }
    await notify(spec, context(targets, key="k1"), to="tag:night", body="x")
    assert http_peer.paths() == ["/night"]  # tags are case-insensitive, as in apprise

    http_peer.requests.clear()
    await notify(spec, context(targets, key="k2"), to=["tag:ops", "untagged"], body="x")
    assert sorted(http_peer.paths()) == ["/day", "/night", "/untagged"]

    with pytest.raises(PermanentActionError, match="no target matched tag:nobody"):
        await notify(spec, context(targets, key="k3"), to="tag:nobody", body="x")


def test_parse_target_reads_apprise_text_config_tags() -> None:
    assert parse_target("ops, oncall = slack://a/b/c") == notify_action.TargetEntry(
        url="slack://a/b/c", tags=frozenset({"ops", "oncall"})
    )
    # '=' inside a URL's query is not a tag separator
    assert parse_target("json://h/p?x=y").tags == frozenset()
    assert parse_target("json://h/p?x=y").url == "json://h/p?x=y"


async def test_a_missing_attachment_is_permanent(spec: ActionSpec, http_peer: HttpPeer) -> None:
    with pytest.raises(PermanentActionError, match="not a readable file"):
        await notify(
            spec,
            context({}),
            to=f"json://{http_peer.base}/x",
            body="x",
            attach=["/nonexistent/report.csv"],
        )
    assert http_peer.requests == []


def test_lanes_name_the_first_target_and_never_a_secret(spec: ActionSpec) -> None:
    assert spec.target is not None and spec.shorthand == "body"
    lane = spec.target
    assert lane(NotifyParams(to=["ops-slack", "ops-mail"], body="x")) == "notify:ops-slack"
    assert lane(NotifyParams(to=["tag:oncall"], body="x")) == "notify:tag:oncall"
    raw = lane(NotifyParams(to=[f"slack://{SLACK_TOKENS}/#ops"], body="x"))
    assert raw.startswith("notify:slack://")
    assert not any(token in raw for token in SLACK_TOKENS.split("/"))
    assert lane(NotifyParams(to=["json://u:pw123456@example.com/p"], body="x")) == (
        "notify:json://example.com"
    )


def test_params_defaults_and_limits() -> None:
    params = NotifyParams.model_validate({"body": "x"})  # the `- notify: "text"` shorthand
    assert params.to == ["tag:default"] and params.format == "text" and params.attach == []
    with pytest.raises(ValueError):
        NotifyParams.model_validate({"to": "a", "body": "x", "format": "rtf"})
    with pytest.raises(ValueError):
        NotifyParams.model_validate({"to": [], "body": "x"})


# ---------------------------------------------------------------------------
# check_config


def test_check_config_reports_bad_urls_by_file_line_and_name(
    host: PluginHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = tmp_path / "credentials"
    write(credentials / "slack-b", "B0SECRETTOKEN77\n")
    config = write(
        tmp_path / "ccbus.yaml",
        f"""
        targets:
          ops-slack: "ops = slack://{SLACK_TOKENS}/#ops"
          hook-slack: "https://hooks.slack.com/services/{SLACK_TOKENS}"
          mail: "mailto://bot:pw@mail.example.com?to=ops@example.com"
          typo: "nosuchscheme://x"
          empty-mail: "mailto://"
          leaky: "nosuchscheme://admin:hunter2secret@host/tok3n-XYZ"
          half-slack: "slack://${{credential:slack-b}}"
        rules: []
        """,
    )
    loaded = load_config(config, environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    caplog.set_level(logging.DEBUG)

    problems = host.check_config(loaded)

    assert problems == [
        f"{config}:5:3: targets.typo: apprise does not accept this URL (nosuchscheme://...)",
        f"{config}:6:3: targets.empty-mail: apprise does not accept this URL (mailto://...)",
        f"{config}:7:3: targets.leaky: apprise does not accept this URL (nosuchscheme://...)",
        f"{config}:8:3: targets.half-slack: apprise does not accept this URL (slack://...)",
    ]
    for secret in ("hunter2secret", "tok3n-XYZ", "B0SECRETTOKEN77"):
        assert secret not in caplog.text  # apprise's complaints were kept quiet too
