"""The ``webhook`` action against a real HTTP server over loopback (no mocked client)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from http_receiver import HttpReceiver
from pydantic import ValidationError
from support import write

import ccbus
from ccbus.actions.api import ActionContext
from ccbus.actions.http_sessions import HttpClients
from ccbus.actions.webhook import WebhookParams, lane, parse_retry_after, run
from ccbus.errors import PermanentActionError, RetryableActionError
from ccbus.events.envelope import Event
from ccbus.pipeline import Pipeline
from ccbus.plugins import PluginHost
from ccbus.records import Invocation
from ccbus.rules.engine import Engine
from ccbus.rules.expressions import ExpressionCompiler
from ccbus.rules.loader import load_rules
from ccbus.sources.webhook import sign

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as r:
        yield r


@pytest.fixture
async def http() -> AsyncIterator[HttpClients]:
    clients = HttpClients()
    yield clients
    await clients.aclose()


EVENT = Event(
    type="call.abandoned",
    source="cvp-prod",
    id="evt-1",
    subject="c-42",
    data={"callId": "c-42", "queue": "sales", "waitSeconds": 95},
)


def params(**raw: Any) -> WebhookParams:
    return WebhookParams.model_validate(raw)


def context(http: HttpClients, event: Event = EVENT, key: str = "evt-1:rule:0") -> ActionContext:
    return ActionContext(
        rule="rule", event=event, idempotency_key=key, log=logging.getLogger("test"), http=http
    )


# -- success ----------------------------------------------------------------------


async def test_default_posts_the_event_as_cloudevents_json(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    await run(params(url=receiver.url_for("/hook")), context(http))
    [got] = await receiver.wait_for_async(1)
    assert (got.method, got.path) == ("POST", "/hook")
    assert got.headers["content-type"] == "application/cloudevents+json"
    assert got.headers["idempotency-key"] == "evt-1:rule:0"
    assert got.headers["user-agent"] == f"ccbus/{ccbus.__version__}"
    assert "x-ccbus-signature" not in got.headers
    doc = got.json()
    assert doc == EVENT.to_cloudevent()
    assert doc["specversion"] == "1.0" and doc["data"]["callId"] == "c-42"


async def test_json_query_method_and_headers(receiver: HttpReceiver, http: HttpClients) -> None:
    call = params(
        url=receiver.url_for("/api/tickets?fixed=1"),
        method="put",  # case does not matter
        json={"call": "c-42", "n": 5, "tags": ["a", None]},
        query={"team": "ops"},
        headers={"X-Team": "ops"},
    )
    await run(call, context(http))
    [got] = await receiver.wait_for_async(1)
    assert got.method == "PUT"
    assert got.query == {"fixed": "1", "team": "ops"}
    assert got.headers["x-team"] == "ops"
    assert got.headers["content-type"] == "application/json"
    assert got.body == b'{"call":"c-42","n":5,"tags":["a",null]}'


async def test_raw_body_with_its_content_type(receiver: HttpReceiver, http: HttpClients) -> None:
    await run(
        params(url=receiver.url, body="id;queue\nc-42;sales\n", content_type="text/csv"),
        context(http),
    )
    [got] = await receiver.wait_for_async(1)
    assert got.body == b"id;queue\nc-42;sales\n"
    assert got.headers["content-type"] == "text/csv"


async def test_get_sends_no_default_body(receiver: HttpReceiver, http: HttpClients) -> None:
    await run(params(url=receiver.url_for("/ping"), method="GET"), context(http))
    [got] = await receiver.wait_for_async(1)
    assert (got.method, got.body) == ("GET", b"")
    assert "content-type" not in got.headers
    assert got.headers["idempotency-key"] == "evt-1:rule:0"


async def test_any_2xx_is_success_whatever_the_body(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    receiver.garbage(status=299)
    await run(params(url=receiver.url), context(http))
    assert [r.status for r in await receiver.wait_for_async(1)] == [299]


async def test_a_rule_file_with_json_params_renders_and_sends(
    tmp_path: Path,
    plugins: PluginHost,
    compiler: ExpressionCompiler,
    receiver: HttpReceiver,
    http: HttpClients,
) -> None:
    write(
        tmp_path / "rules" / "crm.yaml",
        f"""
        rules:
          - name: tell-crm
            on: call.abandoned
            do:
              - webhook:
                  url: "{receiver.url}/calls/{{callId}}"
                  json: {{call: "{{callId}}", waited: "{{waitSeconds}}", note: "queue {{queue}}"}}
                  headers: {{X-Queue: "{{queue}}"}}
                  query: {{q: "{{queue}}"}}
        """,
    )
    ruleset = load_rules([tmp_path / "rules"], actions=plugins.actions, compiler=compiler)
    assert [str(e) for e in ruleset.errors] == []
    [invocation] = Pipeline(Engine(ruleset.rules)).process(EVENT, 0).invocations
    assert invocation.spec.target is not None
    assert invocation.spec.target(invocation.params) == f"webhook:http://127.0.0.1:{receiver.port}"
    await invocation.spec.run(invocation.params, context(http, key=invocation.idempotency_key))
    [got] = await receiver.wait_for_async(1)
    assert got.path == "/calls/c-42"
    assert got.json() == {"call": "c-42", "waited": 95, "note": "queue sales"}
    assert got.headers["x-queue"] == "sales" and got.query == {"q": "sales"}
    assert got.headers["idempotency-key"] == "cvp-prod/evt-1:tell-crm:0"


def test_rule_loader_knows_the_json_alias(
    tmp_path: Path, plugins: PluginHost, compiler: ExpressionCompiler
) -> None:
    write(
        tmp_path / "rules" / "bad.yaml",
        """
        rules:
          - name: typo
            on: call.abandoned
            do:
              - webhook: {url: "http://127.0.0.1:9/x", jsn: {a: 1}}
          - name: both
            on: call.abandoned
            do:
              - webhook: {url: "http://127.0.0.1:9/x", json: {a: 1}, body: "x"}
        """,
    )
    ruleset = load_rules([tmp_path / "rules"], actions=plugins.actions, compiler=compiler)
    errors = [str(e) for e in ruleset.errors]
    assert len(errors) == 2
    assert "unknown parameter 'jsn' (did you mean 'json'?)" in errors[0]
    assert "mutually exclusive" in errors[1]


def test_params_survive_a_dump_and_load_by_field_name() -> None:
    # The outbox stores model_dump_json(by_alias=True); field names must load too.
    call = params(url="https://h.example/x", json={"a": [1, 2]}, hmac_secret="k3y-value",
                  headers={"Authorization": "Bearer t0ken"})
    stored = call.model_dump_json(by_alias=True)
    assert '"k3y-value"' in stored and '"json":{"a":[1,2]}' in stored  # real values, not ***
    assert WebhookParams.model_validate_json(stored) == call
    assert WebhookParams.model_validate(call.model_dump(mode="json")) == call
    assert WebhookParams.model_validate(call.model_dump(by_alias=True)) == call


# -- signing ----------------------------------------------------------------------


async def test_hmac_signature_verifies_with_the_sources_sign(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    secret = "shared-hmac-secret"
    await run(params(url=receiver.url, json={"type": "crm.TicketOpened"}, hmac_secret=secret),
              context(http))
    [got] = await receiver.wait_for_async(1)
    stamp = got.headers["x-ccbus-timestamp"]
    assert abs(int(stamp) - time.time()) < 10
    assert got.headers["x-ccbus-signature"] == sign(secret, stamp, got.body)
    assert got.headers["x-ccbus-signature"] != sign(secret, stamp, got.body + b" ")
    assert got.headers["x-ccbus-signature"] != sign("other-secret", stamp, got.body)


async def test_the_inbound_webhook_source_accepts_what_the_action_sends(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    """The source's own check, fed the request the action sent: the schemes match."""
    from starlette.requests import Request

    from ccbus.sources.webhook import WebhookOptions, WebhookSource

    await run(params(url=receiver.url, hmac_secret="shared-hmac-secret"), context(http))
    [got] = await receiver.wait_for_async(1)
    source = WebhookSource.__new__(WebhookSource)
    source.options = WebhookOptions(hmac_secret="shared-hmac-secret")
    scope = {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in got.headers.items()]}
    request = Request(scope)
    assert source._stamp_problem(request) is None  # what is checked before the body
    assert source._signature_problem(request, got.body) is None
    assert source._signature_problem(request, got.body.replace(b"c-42", b"c-43")) is not None


# -- failures ---------------------------------------------------------------------


async def test_503_is_retryable_naming_status_and_body(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    receiver.fail(1, 503, body="backend down")
    with pytest.raises(RetryableActionError) as caught:
        await run(params(url=receiver.url_for("/hook")), context(http))
    message = str(caught.value)
    assert "HTTP 503" in message and "backend down" in message and "/hook" in message
    assert caught.value.retry_after is None
    await run(params(url=receiver.url_for("/hook")), context(http))  # the next one passes


async def test_429_retry_after_in_seconds(receiver: HttpReceiver, http: HttpClients) -> None:
    receiver.throttle("7")
    with pytest.raises(RetryableActionError) as caught:
        await run(params(url=receiver.url), context(http))
    assert "HTTP 429" in str(caught.value)
    assert caught.value.retry_after == 7


async def test_429_retry_after_as_http_date(receiver: HttpReceiver, http: HttpClients) -> None:
    receiver.throttle(formatdate(time.time() + 120, usegmt=True))
    with pytest.raises(RetryableActionError) as caught:
        await run(params(url=receiver.url), context(http))
    assert caught.value.retry_after is not None and 115 <= caught.value.retry_after <= 121


def test_retry_after_parsing_edges() -> None:
    assert parse_retry_after("0") == 0
    assert parse_retry_after("86400") == 3600  # capped at an hour
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412400) == 80
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_404_is_permanent_with_the_first_bytes_of_the_body(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    receiver.fail(1, 404, body=b"no such hook\x1b[31m" + b"x" * 500)
    with pytest.raises(PermanentActionError) as caught:
        await run(params(url=receiver.url_for("/nope")), context(http))
    message = str(caught.value)
    assert "HTTP 404" in message and "no such hook" in message
    assert "\x1b" not in message and "\\x1b" in message  # control characters escaped
    assert "x" * 180 in message and "x" * 201 not in message  # only the first 200 bytes


async def test_garbage_status_and_body_is_permanent_and_readable(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    receiver.garbage(status=418, body=b"\xff\xfe\x00<html>")
    with pytest.raises(PermanentActionError) as caught:
        await run(params(url=receiver.url), context(http))
    assert "HTTP 418" in str(caught.value) and "<html>" in str(caught.value)


async def test_an_answer_that_is_not_http_is_retryable(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    receiver.garbage(raw=b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    with pytest.raises(RetryableActionError, match="ClientResponseError: Bad status line"):
        await run(params(url=receiver.url), context(http))


async def test_redirects_are_permanent_and_not_followed(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    receiver.respond(302, b"", headers={"Location": receiver.url_for("/new?token=secret")},
                     times=1)
    with pytest.raises(PermanentActionError) as caught:
        await run(params(url=receiver.url_for("/old")), context(http))
    assert "HTTP 302" in str(caught.value) and "/new?token=***" in str(caught.value)
    assert "secret" not in str(caught.value)
    await anyio.sleep(0.1)
    assert [r.path for r in receiver.requests] == ["/old"]


async def test_a_hang_beyond_the_timeout_is_retryable_in_time(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    receiver.hang()
    started = time.monotonic()
    with pytest.raises(RetryableActionError, match=r"no answer within 0\.5s"):
        await run(params(url=receiver.url, timeout="500ms"), context(http))
    assert time.monotonic() - started < 1.5
    receiver.release()


async def test_a_receiver_that_is_down_is_retryable_and_can_come_back(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    await run(params(url=receiver.url), context(http))  # leaves a keep-alive connection
    port = receiver.port
    receiver.stop()
    with pytest.raises(RetryableActionError, match="ClientConnectorError"):
        await run(params(url=receiver.url), context(http))
    receiver.start()
    assert receiver.port == port
    await run(params(url=receiver.url), context(http))
    assert len(receiver.requests) == 2


async def test_a_request_dropped_unanswered_on_a_new_connection_is_not_resent(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    receiver.garbage(raw=b"")  # reads the request, closes without a word
    with pytest.raises(RetryableActionError, match="ServerDisconnectedError"):
        await run(params(url=receiver.url), context(http))
    await anyio.sleep(0.1)
    assert len(receiver.requests) == 1  # the next attempt is the delivery policy's to make


async def test_cookies_a_target_sets_are_not_sent_back(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    # localhost, not 127.0.0.1: aiohttp's cookie jar ignores IP hosts, which
    # would let a session with a jar pass this test.
    base = f"http://localhost:{receiver.port}"
    receiver.respond(200, b"{}", headers={"Set-Cookie": "session=s3cr3t; Path=/"}, times=1)
    await run(params(url=base + "/login"), context(http))
    await run(params(url=base + "/hook"), context(http))
    first, second = await receiver.wait_for_async(2)
    assert (first.path, second.path) == ("/login", "/hook")
    assert "cookie" not in first.headers and "cookie" not in second.headers


async def test_secrets_never_reach_messages_or_shown_params(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    url = f"http://user:secret@127.0.0.1:{receiver.port}/hook?token=secret"
    call = params(url=url, hmac_secret="secret-hmac", query={"key": "secret"},
                  headers={"X-Api-Key": "secret-api-key"})
    await run(call, context(http))
    [got] = await receiver.wait_for_async(1)
    assert got.headers["authorization"] == httpx.BasicAuth("user", "secret")._auth_header
    assert got.headers["x-api-key"] == "secret-api-key"
    assert got.query == {"token": "secret", "key": "secret"}

    failures: list[Exception] = []
    receiver.fail(1, 400, body=b"bad request for token=secret key secret-api-key")
    receiver.hang(times=1)
    for _ in range(2):
        with pytest.raises((PermanentActionError, RetryableActionError)) as caught:
            await run(call.model_copy(update={"timeout": 0.3}), context(http))
        failures.append(caught.value)
    receiver.release()
    receiver.stop()
    with pytest.raises(RetryableActionError) as caught:
        await run(call, context(http))
    failures.append(caught.value)
    shown = Invocation(rule="r", action="webhook", index=0, params=call, event=EVENT,
                       spec=PluginHost(autoload=False).actions["webhook"]).describe()
    for text in [str(f) for f in failures] + [shown, repr(call)]:
        assert "secret" not in text.replace("hmac_secret=", ""), text
        assert "127.0.0.1" in text
    # no chained aiohttp error (whose text or request info carries the URL) rides along
    assert all(f.__cause__ is None and (f.__context__ is None or f.__suppress_context__)
               for f in failures)


async def test_a_missing_ca_bundle_is_a_clear_permanent_error(http: HttpClients) -> None:
    with pytest.raises(PermanentActionError, match="CA bundle /nonexistent/ca.pem does not exist"):
        await run(params(url="https://127.0.0.1:9/", ca_bundle="/nonexistent/ca.pem"),
                  context(http))


async def test_tls_is_verified_so_https_to_plain_http_is_retryable(
    receiver: HttpReceiver, http: HttpClients
) -> None:
    with pytest.raises(RetryableActionError, match="ClientConnectorSSLError") as caught:
        await run(params(url=f"https://127.0.0.1:{receiver.port}/"), context(http))
    assert "SSL" in str(caught.value)


# -- parameters and registration -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"url": "ftp://h.example/x"}, "http:// or https://"),
        ({"url": "http:///path"}, "no host"),
        ({"url": "https://h.example/x", "json": {}, "body": "x"}, "mutually exclusive"),
        ({"url": "https://h.example/x", "method": "TRACE"}, "method"),
        ({"url": "https://h.example/x", "headers": {"Idempotency-Key": "k"}}, "set by the"),
        ({"url": "https://h.example/x", "headers": {"Content-Type": "a/b"}}, "content_type"),
        ({"url": "https://h.example/x", "headers": {"X-A": "1\r\nX-B: 2"}}, "line breaks"),
        ({"url": "https://h.example/x", "headers": {"Bad Name": "1"}}, "header name"),
        ({"url": "https://h.example/x", "timeout": 0}, "greater than 0"),
        ({"url": "https://h.example/x", "hmac_secret": ""}, "at least 1"),
        ({"url": "https://h.example/x", "verify": False}, "verify"),  # there is no such switch
    ],
)
def test_bad_parameters_are_refused(raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        WebhookParams.model_validate(raw)


def test_lane_is_scheme_host_and_port() -> None:
    assert lane(params(url="https://CRM.example/x?t=1")) == "webhook:https://crm.example:443"
    assert lane(params(url="http://u:p@crm.example/x")) == "webhook:http://crm.example:80"
    assert lane(params(url="http://[::1]:8080/x")) == "webhook:http://[::1]:8080"
    assert params(url="https://h.example/x", timeout="2s").timeout == 2.0


def test_the_action_is_registered(plugins: PluginHost) -> None:
    spec = plugins.actions["webhook"]
    assert spec.shorthand == "url" and spec.side_effects and spec.target is lane
    assert plugins.problems == []


# -- the receiver itself ------------------------------------------------------------------


def test_receiver_stop_drops_keep_alive_connections_and_start_reuses_the_port() -> None:
    with HttpReceiver() as receiver, httpx.Client() as client:
        port = receiver.port
        assert client.get(receiver.url).status_code == 200
        receiver.stop()
        with pytest.raises(httpx.ConnectError):
            client.get(receiver.url)
        receiver.start()
        assert receiver.port == port
        assert client.get(receiver.url).status_code == 200
        receiver.fail(2, 503, path="/a")
        statuses = [client.get(receiver.url_for(p)).status_code for p in ("/b", "/a", "/a", "/a")]
        assert statuses == [200, 503, 503, 200]
        assert len(receiver.wait_for(6, timeout=1)) == 6
        with pytest.raises(TimeoutError, match="6 request"):
            receiver.wait_for(7, timeout=0.1)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("crm.example/hook", "'crm.example/hook' has no scheme"),
        ("ftp://crm.example/hook", "'ftp://crm.example/hook' (scheme 'ftp')"),
        ("https://user:hunter2@crm.example/x", None),  # accepted
    ],
)
def test_a_url_without_http_says_what_it_got(url: str, says: str | None) -> None:
    if says is None:
        assert str(params(url=url).url).startswith("https://")
        return
    with pytest.raises(ValidationError) as caught:
        params(url=url)
    assert says in str(caught.value)
