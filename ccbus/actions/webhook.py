"""Built-in action ``webhook``: send the event (or a rendered body) to a URL over HTTP(S).

::

    do:
      - webhook: https://crm.example/hooks/ccbus          # the event as CloudEvents JSON
      - webhook:
          url: https://crm.example/api/tickets
          method: PUT
          json: {call: "{callId}", queue: "{queue}"}
          headers: {Authorization: "Bearer ${CRM_TOKEN}"}
          hmac_secret: ${credential:crm-hmac}

Every request carries ``Idempotency-Key`` (stable across retries of one
call, so a receiver can drop the duplicates that at-least-once delivery
produces) and ``User-Agent: ccbus/<version>``.  With ``hmac_secret`` it is
signed exactly as the inbound ``webhook`` source verifies
(:func:`ccbus.sources.webhook.sign`), so one ccbus can feed another.

Outcomes: 2xx is success; 408, 429 and 5xx, timeouts and connection or
protocol failures are retryable (``Retry-After`` honoured, capped at an
hour); every other status, 3xx included, is permanent: redirects are not
followed, because following one would hand the body, its signature and the
idempotency key to an address nobody configured.

No message this action raises or logs contains the HMAC secret, a header
value, the URL's userinfo or its query values: they routinely hold
credentials, and error messages end up in logs, ``/health`` and the outbox.

Requests go out through aiohttp sessions shared per CA bundle
(:class:`ccbus.actions.http_sessions.HttpClients`: keep-alive pools, TLS always
verified, no cookie jar, no proxy from the environment); aiohttp replaced
httpx for its CPU cost per request (see that module).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import ssl
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit

import aiohttp
import anyio
import yarl
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    model_validator,
)

from ccbus.actions.api import ActionContext, ActionSpec
from ccbus.actions.http_sessions import RequestTrace
from ccbus.config.schema import Duration, Options
from ccbus.config.secrets import SecretBook
from ccbus.errors import PermanentActionError, RetryableActionError
from ccbus.events.envelope import Event
from ccbus.hookspecs import hookimpl
from ccbus.sources.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from ccbus.version import __version__

__all__ = ["WebhookParams", "lane", "redact_url", "run"]

USER_AGENT = f"ccbus/{__version__}"
#: Longest ``Retry-After`` honoured: a misconfigured server must not park a call for days.
MAX_RETRY_AFTER = 3600.0
#: How much of an error response's body goes into the error message.
SNIPPET_BYTES = 200
#: Success bodies up to this size are read so the connection can be reused;
#: a larger body is abandoned (the connection is closed instead).
DRAIN_BYTES = 64 * 1024
CLOUDEVENTS_JSON = "application/cloudevents+json"

#: Headers the action sets itself; a rule that sets them is refused at load, not overridden.
_RESERVED_HEADERS = frozenset(
    {
        "content-length",
        "content-type",  # use the `content_type` parameter
        "host",
        "idempotency-key",
        "transfer-encoding",
        "user-agent",
        SIGNATURE_HEADER,
        TIMESTAMP_HEADER,
    }
)
#: Longer URLs are refused at load (many servers refuse them anyway).
MAX_URL_LENGTH = 65536
_IPV4_STYLE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


# --------------------------------------------------------------------------
# Values whose repr hides secrets.
#
# `ccbus try`, `ccbus test` and the demo print calls with repr() of their
# parameters (Invocation.describe).  These str subclasses keep the real
# value for sending and for JSON (the outbox stores model_dump output), and
# only change what repr() shows.


class _Masked(str):
    """A header value, query value or secret: repr shows ``'***'``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class _Url(str):
    """A URL: repr shows it without userinfo and query values."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(redact_url(self))


def redact_url(url: str) -> str:
    """``https://u:p@host/p?token=x`` -> ``https://host/p?token=***``: a URL safe to show.

    The path is kept, since a 404 cannot be diagnosed without it.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.netloc.rpartition("@")[2]
    shown = f"{parts.scheme}://{host}{parts.path}" if parts.scheme or host else parts.path
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        shown += "?" + (
            "&".join(f"{quote(key, safe='')}=***" for key, _ in pairs) if pairs else "***"
        )
    return shown


def _check_host(parts: SplitResult) -> None:
    """Refuse hosts that look like IP addresses but are not (``256.1.1.1``, ``[::g]``).

    yarl (what aiohttp sends with) would pass them on to DNS, to fail only
    at the first delivery; refused here, the rule is refused at load.
    """
    host = parts.netloc.rpartition("@")[2]
    if host.startswith("["):
        literal = host[1 : host.find("]")] if "]" in host else host[1:]
        ipaddress.IPv6Address(literal.replace("%25", "%"))  # ValueError if it is not one
    elif _IPV4_STYLE.fullmatch(parts.hostname or ""):
        ipaddress.IPv4Address(parts.hostname)


def _check_url(value: str) -> _Url:
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number
        _check_host(parts)
        yarl.URL(value)  # what aiohttp will parse it with: IDNA host, encoding
    except ValueError as err:  # UnicodeError (a bad IDNA host) included
        reason = str(err).replace(value, redact_url(value))
        raise ValueError(f"not a valid URL: {redact_url(value)} ({reason})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"the URL must start with http:// or https://: {redact_url(value)!r}"
            + (f" (scheme {parts.scheme!r})" if parts.scheme else " has no scheme")
        )
    if not parts.hostname:
        raise ValueError(f"the URL has no host: {redact_url(value)}")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("the URL contains whitespace or control characters")
    return _Url(value)


def _check_header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid header name")
    if value.lower() in _RESERVED_HEADERS:
        hint = " (use the 'content_type' parameter)" if value.lower() == "content-type" else ""
        raise ValueError(f"header {value!r} is set by the webhook action itself{hint}")
    return value


def _header_text(value: str) -> str:
    # A templated value with a line break could smuggle in a second header.
    if _BAD_VALUE.search(value):
        raise ValueError("a header value must not contain line breaks or NUL")
    if not value.isascii():
        raise ValueError("a header value must be ASCII (HTTP has no portable encoding for more)")
    return value


def _header_value(value: str) -> _Masked:
    return _Masked(_header_text(value))


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


HeaderName = Annotated[str, AfterValidator(_check_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
Secret = Annotated[str, Field(min_length=1), AfterValidator(_Masked)]


class WebhookParams(Options):
    """The ``webhook`` action's parameters.

    ``json`` is the name rules use; the Python field is ``json_body`` because
    ``json`` is a (deprecated) method of pydantic's ``BaseModel``.  Both names
    validate (``populate_by_name``), so parameters dumped by field name -- as
    the outbox stores them -- load again unchanged.
    """

    model_config = ConfigDict(populate_by_name=True)

    url: Annotated[str, AfterValidator(_check_url)]
    method: Annotated[Literal["GET", "POST", "PUT", "PATCH", "DELETE"], BeforeValidator(_upper)] = (
        "POST"
    )
    headers: dict[HeaderName, HeaderValue] = {}
    query: dict[str, Annotated[str, AfterValidator(_Masked)]] = {}
    json_body: JsonValue = Field(default=None, alias="json")
    body: str | None = None
    content_type: Annotated[str, AfterValidator(_header_text)] | None = None
    timeout: Annotated[Duration, Field(gt=0)] = 10.0
    ca_bundle: str | None = None
    hmac_secret: Secret | None = None

    @model_validator(mode="after")
    def _one_body(self) -> WebhookParams:
        if self.json_body is not None and self.body is not None:
            raise ValueError("'json' and 'body' are mutually exclusive: give one of them")
        return self


# --------------------------------------------------------------------------
# The call


def lane(params: WebhookParams) -> str:
    """``webhook:https://crm.example:443``: calls to one origin share a delivery lane."""
    parts = urlsplit(params.url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port or (443 if scheme == "https" else 80)
    return f"webhook:{scheme}://{host}:{port}"


def _payload(params: WebhookParams, event: Event) -> tuple[bytes, str | None]:
    """The exact bytes to send (and sign) and their default content type."""
    try:
        if params.body is not None:
            return params.body.encode("utf-8"), "text/plain; charset=utf-8"
        if params.json_body is not None:
            return _dumps(params.json_body), "application/json"
        if params.method in ("GET", "DELETE"):
            return b"", None  # no default body where servers do not expect one
        return _dumps(event.to_cloudevent()), CLOUDEVENTS_JSON
    except ValueError as err:  # NaN or infinity: not JSON
        raise PermanentActionError(f"webhook: the body is not valid JSON: {err}") from None


def _dumps(value: Any) -> bytes:
    # default=str: vendor payloads may carry values JSON has no type for (datetimes).
    text = json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str
    )
    return text.encode("utf-8")


def _secrets(params: WebhookParams, url: yarl.URL) -> list[str]:
    """Values that must never appear in a message, longest first."""
    found: list[str] = [params.hmac_secret or "", url.password or ""]
    found += params.headers.values()
    found += url.query.values()
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with ``secrets`` masked in every encoding a peer may echo them in
    (percent-encoded in the URL, JSON-escaped in a body, base64 in ``Basic``)."""
    values = list(secrets)
    if not values or not text:
        return text
    return SecretBook({}, values).redact(text)


def _printable(text: str) -> str:
    """Control characters escaped, so a hostile body cannot forge log lines."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def _snippet(data: bytes, secrets: Iterable[str]) -> str:
    if not data:
        return "(empty body)"
    text = _scrub(data[:SNIPPET_BYTES].decode("utf-8", errors="replace"), secrets)
    # repr() escapes control characters, so a hostile body cannot forge log lines.
    return f"body {text!r}" + ("..." if len(data) > SNIPPET_BYTES else "")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date), capped at 1 h.

    ``None`` when absent or unparseable: the delivery policy's backoff applies then.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is taken as UTC
            moment = moment.replace(tzinfo=UTC)
        reference = datetime.now(UTC).timestamp() if now is None else now
        seconds = moment.timestamp() - reference
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


async def _read_head(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to ``limit`` bytes of the body and one more (to tell there is more); the rest unread.

    ``content.read(n)`` returns what has arrived, up to ``n`` bytes, hence the loop.
    """
    data = bytearray()
    while len(data) <= limit:
        chunk = await response.content.read(limit + 1 - len(data))
        if not chunk:  # the end of the body
            break
        data += chunk
    return bytes(data)


def _failure(err: Exception) -> str:
    """What went wrong, for the message: never ``str()`` of an error that quotes the URL.

    aiohttp's :class:`~aiohttp.ClientResponseError` (how it reports an answer
    that is not HTTP) puts the full URL, userinfo and query included, into
    its text, so only its ``message`` is used; connection errors are told
    without the SSL context's repr.  The caller still scrubs the result.
    """
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return str(err.certificate_error)  # "[SSL: CERTIFICATE_VERIFY_FAILED] ..."
    if isinstance(err, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake
        return f"cannot connect to {err.host}:{err.port}: {err.os_error}"
    if isinstance(err, aiohttp.ClientResponseError):
        return " ".join(err.message.split())  # the parser's report spans lines
    if isinstance(err, aiohttp.ServerDisconnectedError):
        # Its message may be the parsed answer (a RawResponseMessage): not shown.
        return err.message if isinstance(err.message, str) else "Server disconnected"
    return str(err)


async def _send(
    session: aiohttp.ClientSession,
    method: str,
    url: yarl.URL,
    *,
    headers: dict[str, str],
    data: bytes | None,
    limits: aiohttp.ClientTimeout,
) -> aiohttp.ClientResponse:
    """The response (its headers read), redirects not followed.

    A pooled keep-alive connection that the server closed a moment ago (its
    idle timeout) is still taken from the pool until the loop has read the
    close; the request then fails as it goes out, normally unseen by the
    server.  aiohttp resends only idempotent methods then, and httpx (used
    before) checked a pooled connection before using it.  So a request that
    failed on a *reused* connection before any answer goes out again on the
    next one -- the same Idempotency-Key covers the rare server that did read
    it -- while a failure on a new connection is final for this attempt.
    Bounded by the pool's size and the caller's deadline.
    """
    while True:
        trace = RequestTrace()
        try:
            return await session.request(
                method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=limits,
                trace_request_ctx=trace,
            )
        except aiohttp.ClientConnectionError as err:
            # Not for timeouts (the server may be at work on it), nor a failure
            # to connect (no pooled connection was involved).
            stale = trace.reused_connection and not isinstance(
                err, (TimeoutError, aiohttp.ClientConnectorError)
            )
            if not stale:
                raise


def _basic_auth(url: yarl.URL) -> str | None:
    """``Authorization`` for a URL's ``user:pass@`` (UTF-8, as browsers send it), or None."""
    if not (url.user or url.password):
        return None
    userpass = f"{url.user or ''}:{url.password or ''}".encode()
    return "Basic " + base64.b64encode(userpass).decode("ascii")


def _answer(status: int, head: bytes, limit: int) -> dict[str, Any]:
    """What a rule's next action sees as ``previous``: ``status``, the body as
    ``text`` and, when it is JSON, as ``json`` (a body over ``limit`` bytes is
    neither: it was not read to its end)."""
    if len(head) > limit:
        return {"status": status, "text": None, "json": None}
    text = head.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = None
    return {"status": status, "text": text, "json": parsed}


async def run(params: WebhookParams, ctx: ActionContext) -> dict[str, Any]:
    url = yarl.URL(params.url)
    if params.query:
        url = url.update_query(dict(params.query))  # replaces the URL's own values for a key
    where = f"{params.method} {redact_url(str(url))}"
    secrets = _secrets(params, url)

    content, default_type = _payload(params, ctx.event)
    headers = {name: str(value) for name, value in params.headers.items()}
    authorization = _basic_auth(url)
    if authorization is not None:
        # The URL's credentials win over an Authorization header, and leave the
        # URL: aiohttp would refuse the pair, and must not see them at all.
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        headers["Authorization"] = authorization
        url = url.with_user(None)
    headers["User-Agent"] = USER_AGENT
    headers["Idempotency-Key"] = ctx.idempotency_key
    content_type = params.content_type or default_type
    if content_type is not None:
        headers["Content-Type"] = str(content_type)
    if params.hmac_secret is not None:
        # A fresh timestamp per attempt: a retry an hour later still passes the
        # receiver's max_skew check.
        stamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = stamp
        headers[SIGNATURE_HEADER] = sign(str(params.hmac_secret), stamp, content)

    try:
        session = ctx.http.get(params.ca_bundle)
    except FileNotFoundError:
        raise PermanentActionError(
            f"webhook {where}: CA bundle {params.ca_bundle} does not exist (ca_bundle)"
        ) from None
    except (ssl.SSLError, OSError) as err:
        raise PermanentActionError(
            f"webhook {where}: CA bundle {params.ca_bundle} could not be loaded: {err}"
        ) from None

    # The session carries no cookie jar (HttpClients gives it a DummyCookieJar):
    # cookies one target set must not travel to another call.
    started = anyio.current_time()
    deadline = started + params.timeout
    try:
        # aiohttp's total timeout covers the whole exchange, but rounds long
        # timeouts up to whole seconds; this deadline, which also bounds the
        # resends in _send and the body read below, holds a lane no longer than
        # `timeout` however slowly a server drips bytes.
        with anyio.fail_after(params.timeout):
            response = await _send(
                session,
                params.method,
                url,
                headers=headers,
                data=content if content or params.method not in ("GET", "DELETE") else None,
                limits=aiohttp.ClientTimeout(total=params.timeout),
            )
    except TimeoutError:  # asyncio's and aiohttp's ServerTimeoutError are TimeoutError
        raise RetryableActionError(
            f"webhook {where}: no answer within {params.timeout:g}s"
        ) from None
    except aiohttp.InvalidURL as err:
        # Validation at load accepts only what yarl parses; should aiohttp still
        # refuse the URL, no retry can change that.
        raise PermanentActionError(
            f"webhook {where}: {type(err).__name__}: the URL cannot be requested"
        ) from None
    except (aiohttp.ClientError, OSError) as err:
        # Connection refused or reset, DNS, TLS failures (certificate or
        # handshake), an answer that is not HTTP: the target may be fine later.
        reason = _printable(_scrub(_failure(err), secrets)) or "no detail"
        raise RetryableActionError(f"webhook {where}: {type(err).__name__}: {reason}") from None

    status = response.status
    limit = DRAIN_BYTES if 200 <= status < 300 else SNIPPET_BYTES
    head = b""
    try:
        with anyio.move_on_after(max(deadline - anyio.current_time(), 0.0)):
            head = await _read_head(response, limit)
    except (aiohttp.ClientError, OSError):  # TimeoutError (aiohttp's total timeout) included
        pass  # the status decides; an unreadable body only shortens the message
    finally:
        # A body read to its end leaves the connection for reuse; one not read
        # to the end (too long, timed out) closes it.
        response.release()

    elapsed = anyio.current_time() - started
    if 200 <= status < 300:
        ctx.log.debug("webhook %s: HTTP %d in %.0f ms", where, status, elapsed * 1000)
        return _answer(status, head, limit)
    answer = f"HTTP {status}"
    if response.reason:
        answer += " " + _printable(_scrub(response.reason[:40], secrets))
    message = f"webhook {where}: {answer}, {_snippet(head, secrets)}"
    if status in (408, 429) or 500 <= status < 600:
        raise RetryableActionError(
            message, retry_after=parse_retry_after(response.headers.get("retry-after"))
        )
    if 300 <= status < 400:
        location = response.headers.get("location")
        moved = f" to {_printable(redact_url(location))}" if location else ""
        raise PermanentActionError(
            f"{message}; redirects{moved} are not followed: set the final URL"
        )
    raise PermanentActionError(message)


@hookimpl
def register_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            name="webhook",
            params=WebhookParams,
            run=run,
            shorthand="url",
            target=lane,
            description="Send the event (or a JSON or text body) to a URL over HTTP(S).",
        )
    ]
