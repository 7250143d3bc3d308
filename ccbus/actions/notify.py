"""Built-in action ``notify``: send a message through apprise (Slack, e-mail, Teams, ...).

::

    targets:
      ops-slack: "ops, oncall = ${credential:ops-slack-url}"   # tags, then the URL
      ops-mail: "mailtos://bot:${credential:smtp-pw}@mail.example.com?to=ops@example.com"
    ...
    do:
      - notify: {to: ops-slack, title: "Queue {queue}", body: "{count} callers gave up"}
      - notify: {to: "tag:oncall", body: "..."}

Why the pieces look the way they do:

* Targets live in the config, not in rules, because their URLs carry
  credentials; rules name them.  Tags use apprise's own text-config syntax
  (``tag1, tag2 = URL``) since ``targets:`` maps a name to one string.
* apprise's ``notify`` is synchronous and many services block in it, so the
  whole build-and-send runs in a worker thread (``anyio.to_thread``): the
  event loop must never stall on a slow SMTP server.
* apprise 2.x returns an ``AppriseResult`` that carries the log lines of
  that one call (captured per call through a context variable).  Failures
  are reported with those lines rather than with ``apprise.LogCapture``,
  which hooks the process-wide logger and would mix concurrent calls.
* Nothing secret may reach an error or a log: targets are shown by name,
  raw URLs in apprise's privacy form, and any URL part apprise itself
  hides is also redacted from the reasons we pass on.  apprise's DEBUG
  lines (full request URLs, payloads) are dropped for the same reason.
* A call to several targets where some accept and some fail is retried for
  the failed ones only (remembered per idempotency key in this process), so
  a retry does not page the targets that already got the message.
* apprise reports a service's failure as a log line, not a status: its
  plugins end a failed HTTP exchange's warning with ``error=<status>.``
  (``Failed to send JSON POST notification: Page not found., error=404.``).
  That status decides as it does for the ``webhook`` action: a 4xx other
  than 408 and 429 is permanent (the service refused this message: a wrong
  token, a deleted channel), anything else is retried.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio.to_thread
import apprise
from pydantic import Field, field_validator

from ccbus.actions.api import ActionContext, ActionSpec
from ccbus.config.schema import Options
from ccbus.config.suggest import did_you_mean
from ccbus.errors import ActionError, PermanentActionError, RetryableActionError
from ccbus.hookspecs import hookimpl

if TYPE_CHECKING:
    from ccbus.config.file import LoadedConfig

__all__ = ["NotifyParams", "TargetEntry", "check_config", "parse_target", "register_actions"]

#: apprise's own limit for the whole call, in seconds.  Kept under the
#: delivery layer's default action timeout (30 s) so apprise reports which
#: service timed out before the call as a whole is abandoned.
APPRISE_TIMEOUT = 25.0

#: How many idempotency keys keep their "already delivered" targets.
_REMEMBERED_KEYS = 4096

#: Tag names: apprise's characters minus ``:``, which apprise reads as a
#: priority prefix or retry suffix (``2:ops``, ``ops:3``).
_TAG = r"[a-z0-9_-]+"
#: ``"ops, oncall = slack://..."``: apprise's text-config form of a tagged URL.
_TAGGED_URL = re.compile(
    rf"^\s*(?P<tags>{_TAG}(?:[\s,]+{_TAG})*)\s*=\s*(?P<url>[a-z0-9+.-]{{1,32}}://.*)$",
    re.IGNORECASE | re.DOTALL,
)
_SCHEME = re.compile(r"^\s*([a-z0-9+.-]{1,32})://", re.IGNORECASE)
#: Tags ccbus gives each service of one call, to map apprise's per-service
#: results back to target names.  The dot keeps them apart from user tags.
_CALL_TAG = "ccbus.t{}"

_ASSET = apprise.AppriseAsset(app_id="ccbus", app_desc="ccbus notifications")

#: The HTTP status at the end of apprise's warning for a failed exchange.
_HTTP_STATUS = re.compile(r"\berror=(\d{3})\b")
#: 4xx answers that may pass later (timeout, rate limit): retried like 5xx.
_RETRYABLE_4XX = frozenset({408, 429})

# ---------------------------------------------------------------------------
# apprise's log: never a secret, never another call's lines

#: Set while apprise parses URLs for us: its complaints may quote parts of the URL.
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("ccbus_notify_quiet", default=False)


class _AppriseLogGuard(logging.Filter):
    """Drops apprise (and urllib3) records that may carry secrets.

    apprise logs full request URLs and payloads (Slack tokens, passwords in
    query strings) at DEBUG, urllib3 logs request paths at DEBUG, and apprise
    quotes malformed tokens while rejecting a URL.  A logger filter runs
    before any handler, ccbus's or apprise's per-call capture, so those
    records never reach one.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO and not _QUIET.get()


#: apprise's logger, and that of urllib3 (under ``requests``), whose DEBUG
#: lines show each request's path: where Slack and others keep their tokens.
_GUARDED_LOGGERS = (apprise.LOGGER_NAME, "urllib3.connectionpool")


def _install_log_guard() -> None:
    for name in _GUARDED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _AppriseLogGuard) for f in logger.filters):
            logger.addFilter(_AppriseLogGuard())


_install_log_guard()


@contextmanager
def _quiet() -> Iterator[None]:
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


# ---------------------------------------------------------------------------
# Targets


@dataclass(frozen=True, slots=True)
class TargetEntry:
    """One ``targets:`` value: the apprise URL and the tags it was declared with."""

    url: str
    tags: frozenset[str] = frozenset()


def parse_target(value: str) -> TargetEntry:
    """Split ``"ops, oncall = slack://..."`` into tags and URL (tags are optional)."""
    match = _TAGGED_URL.match(value)
    if match is None:
        return TargetEntry(url=value.strip())
    tags = frozenset(t.lower() for t in re.split(r"[\s,]+", match.group("tags")) if t)
    return TargetEntry(url=match.group("url").strip(), tags=tags)


def _scheme_hint(url: str) -> str:
    """``slack://...``: all of a URL that may be shown when apprise rejects it."""
    match = _SCHEME.match(url)
    return f"{match.group(1).lower()}://..." if match else "no scheme://"


def _instantiate(url: str, tags: Sequence[str] = ()) -> apprise.NotifyBase | None:
    """apprise's own verdict on a URL: a service object, or None if it is not usable."""
    with _quiet():
        return apprise.Apprise.instantiate(url, asset=_ASSET, tag=list(tags) or None)


def _privacy_form(service: apprise.NotifyBase) -> str:
    """apprise's privacy form of a service URL, without the option query string."""
    render: Callable[..., Any] = service.url  # untyped in apprise
    return str(render(privacy=True)).partition("?")[0]


def _secret_parts(url: str, shown: str) -> set[str]:
    """The parts of ``url`` that apprise hides in its privacy form ``shown``.

    Used to redact apprise's failure messages: whatever apprise does not
    print itself is treated as secret.
    """
    visible = unquote(shown)
    secrets = {url}
    try:
        parts = urlsplit(url)
    except ValueError:
        return secrets
    host = parts.netloc.rpartition("@")[2]
    candidates = [parts.username, parts.password, host, parts.fragment]
    candidates += parts.path.split("/")
    candidates += [v for _, v in parse_qsl(parts.query)]
    for candidate in candidates:
        if candidate and len(candidate) >= 3:
            for form in {candidate, unquote(candidate)}:
                if form not in visible:
                    secrets.add(form)
    return secrets


def _redact(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True, slots=True)
class _Service:
    """One service of a call: how messages name it, and where it goes."""

    label: str  #: the target's name; for a raw URL, its scheme until apprise parsed it
    url: str
    tags: frozenset[str]
    #: Named in ``to`` (by name or as a URL), rather than selected by a tag.
    explicit: bool = True
    raw: bool = False


def _resolve(to: Sequence[str], targets: Mapping[str, str]) -> tuple[list[_Service], list[str]]:
    """Turn ``to`` into services and requested tags; an unknown name is permanent.

    Targets selected by tag are those declaring one of the tags; apprise
    makes the same choice again from the tags they are added with.
    """
    services: dict[str, _Service] = {}
    tags: list[str] = []
    for item in (i.strip() for i in to):
        if item.lower().startswith("tag:"):
            tag = item[4:].strip().lower()
            if not re.fullmatch(_TAG, tag):
                raise PermanentActionError(
                    f"notify: {item!r} is not tag:NAME (letters, digits, '_' and '-')"
                )
            if tag not in tags:
                tags.append(tag)
        elif "://" in item:
            services.setdefault(
                item, _Service(label=_scheme_hint(item), url=item, tags=frozenset(), raw=True)
            )
        elif item in targets:
            entry = parse_target(targets[item])
            services.setdefault(item, _Service(label=item, url=entry.url, tags=entry.tags))
        else:
            close = did_you_mean(item, targets)
            hint = f"did you mean {close!r}? " if close else ""
            known = ", ".join(sorted(targets)) or "none configured"
            raise PermanentActionError(
                f"notify: unknown target {item!r} ({hint}known targets: {known}; "
                "or write an apprise URL, or tag:NAME)"
            )
    wanted = set(tags)
    for name, value in targets.items():
        entry = parse_target(value)
        if name not in services and entry.tags & wanted:
            services[name] = _Service(label=name, url=entry.url, tags=entry.tags, explicit=False)
    return list(services.values()), tags


# ---------------------------------------------------------------------------
# The action


class NotifyParams(Options):
    """Parameters of ``notify``; see docs/plugins/builtin.md."""

    #: Target names, raw apprise URLs or ``tag:NAME``; the default lets
    #: ``- notify: "text"`` reach the targets tagged ``default``.
    to: list[str] = Field(default_factory=lambda: ["tag:default"], min_length=1)
    title: str = ""
    body: str = Field(min_length=1)
    format: Literal["text", "markdown", "html"] = "text"
    attach: list[str] = Field(default_factory=list)

    @field_validator("to", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


@lru_cache(maxsize=256)
def _raw_url_lane(url: str) -> str:
    """The host part of apprise's privacy form: a lane name that shows no secret."""
    service = _instantiate(url)
    if service is None:
        return _scheme_hint(url)
    scheme, _, rest = _privacy_form(service).partition("://")
    host = rest.split("/", 1)[0].rpartition("@")[2]
    return f"{scheme}://{host}"


def check_call(params: Mapping[str, Any], config: Any) -> list[str]:
    """``ccbus check``: every literal ``to:`` name must be a target the config defines
    (an unknown one would be a dead letter at 3 a.m.); templates are left to run time."""
    to = params.get("to", [])
    items = [to] if isinstance(to, str) else to if isinstance(to, list) else []
    targets = config.config.targets
    problems = []
    for item in (i.strip() for i in items if isinstance(i, str)):
        if "{" in item or "://" in item or item.lower().startswith("tag:") or item in targets:
            continue
        close = did_you_mean(item, targets)
        hint = f"did you mean {close!r}? " if close else ""
        known = ", ".join(sorted(targets)) or "none configured"
        problems.append(f"notify: unknown target {item!r} ({hint}known targets: {known}; "
                        "or write an apprise URL, or tag:NAME)")
    return problems


def lane(params: NotifyParams) -> str:
    """``notify:<first target name>``, ``notify:tag:<tag>`` or ``notify:<scheme>://<host>``."""
    first = params.to[0].strip()
    return "notify:" + (_raw_url_lane(first) if "://" in first else first)


def _check_attachments(attach: Sequence[str]) -> None:
    """A missing local file will not appear by retrying: fail permanently, naming it."""
    for item in attach:
        if "://" in item and not item.lower().startswith("file://"):
            continue  # remote: apprise fetches it; a failure there may pass
        path = Path(unquote(urlsplit(item).path) if "://" in item else item).expanduser()
        if not path.is_file():
            raise PermanentActionError(f"notify: attachment {item!r} is not a readable file")


@dataclass(slots=True)
class _Sent:
    """What a worker thread hands back: apprise's result and how to read it."""

    result: apprise.AppriseResult | None  #: None: every service had the message already
    labels: dict[str, str]  #: call tag -> target label
    secrets: set[str]  #: URL parts to redact from reasons


def _send(
    services: Sequence[_Service], tags: Sequence[str], params: NotifyParams, done: frozenset[str]
) -> _Sent:
    """Build the apprise object and notify; runs in a worker thread (both may block).

    Services in ``done`` (labels) accepted the message on an earlier attempt
    and are left out.
    """
    hub = apprise.Apprise(asset=_ASSET)
    sent = _Sent(result=None, labels={}, secrets=set())
    selector: list[str] = []
    for index, service in enumerate(services):
        call_tag = _CALL_TAG.format(index)
        built = _instantiate(service.url, sorted(service.tags | {call_tag}))
        if built is None:
            if service.raw:
                raise PermanentActionError(
                    f"notify: apprise does not accept this URL ({service.label})"
                )
            raise PermanentActionError(
                f"notify: apprise does not accept the URL of target {service.label!r} "
                f"({_scheme_hint(service.url)}); `ccbus check` reports where it is"
            )
        shown = _privacy_form(built)
        label = shown if service.raw else service.label
        sent.secrets |= _secret_parts(service.url, shown)
        if label in done:
            continue
        sent.labels[call_tag] = label
        hub.add(built)
        if service.explicit:
            selector.append(call_tag)
    if done and not len(hub):
        return sent
    sent.result = hub.notify(
        body=params.body,
        title=params.title,
        body_format=params.format,
        tag=selector + [t for t in tags if t not in selector],
        attach=list(params.attach) or None,
        timeout=APPRISE_TIMEOUT,
    )
    return sent


#: Idempotency key -> labels of the targets that already accepted that call.
_delivered: OrderedDict[str, set[str]] = OrderedDict()


def _remember(key: str, labels: set[str]) -> None:
    _delivered.setdefault(key, set()).update(labels)
    _delivered.move_to_end(key)
    while len(_delivered) > _REMEMBERED_KEYS:
        _delivered.popitem(last=False)


def _reasons(entries: Iterator[apprise.NotifyLogEntry], secrets: set[str]) -> str:
    """apprise's WARNING and ERROR lines of one service or call, redacted, deduplicated."""
    seen: list[str] = []
    for entry in entries:
        if entry.level in ("WARNING", "ERROR", "CRITICAL"):
            message = _redact(str(entry.message).strip(), secrets)
            if message and message not in seen:
                seen.append(message)
    return "; ".join(seen)


def _refused(service: apprise.NotifyResult) -> bool:
    """True when the service answered its last attempt with a 4xx that will not pass
    (not 408 or 429), as apprise's ``error=<status>.`` log line says."""
    attempts = service.attempts
    statuses = [
        int(match.group(1))
        for entry in (attempts[-1] if attempts else ())
        if entry.level in ("WARNING", "ERROR", "CRITICAL")
        for match in _HTTP_STATUS.finditer(str(entry.message))
    ]
    return bool(statuses) and 400 <= statuses[-1] < 500 and statuses[-1] not in _RETRYABLE_4XX


def outcome(
    result: apprise.AppriseResult,
    labels: Mapping[str, str],
    secrets: set[str],
    tags: Sequence[str] = (),
) -> set[str]:
    """Judge apprise's result: return the labels that accepted, or raise.

    * SUCCESS: returns.
    * NOMATCH (nothing selected, e.g. no target has the tag): permanent.
    * FAILURE before any service was tried (apprise could not prepare the
      message or its attachments): permanent, it will not change.
    * FAILURE, PARTIAL, TIMEOUT of services: each failed target's reason as
      apprise logged it; permanent when every failed service refused the
      message with a 4xx (see :func:`_refused`), else retryable.  A call
      where one target refuses and another is down is retried, and becomes a
      dead letter once only refusals are left.
    """
    status = result.status
    if status == apprise.AppriseResultStatus.SUCCESS:
        return set(labels.values())
    if status == apprise.AppriseResultStatus.NOMATCH:
        wanted = ", ".join(f"tag:{t}" for t in tags) or "the given targets"
        raise PermanentActionError(f"notify: no target matched {wanted}")
    if len(result) == 0:
        reason = _reasons(result.logs(), secrets) or status.name.lower()
        raise PermanentActionError(f"notify: apprise could not prepare the message: {reason}")
    accepted: set[str] = set()
    failed: list[str] = []
    refused = True
    for service in result:
        label = next((labels[t] for t in service.tag if t in labels), _redact(service.url, secrets))
        if service.status == apprise.AppriseResultStatus.SUCCESS:
            accepted.add(label)
        else:
            reason = _reasons(service.logs(), secrets) or service.status.name.lower()
            failed.append(f"{label}: {reason}")
            refused = refused and _refused(service)
    message = f"notify failed for {len(failed)} of {len(result)} target(s): " + " | ".join(failed)
    if refused:
        raise _Refused(f"{message} (refused by the service: not retried)", accepted)
    raise _PartlyDelivered(message, accepted)


class _Delivered(ActionError):
    """A failure that knows which targets already have the message, so a retry leaves them out."""

    def __init__(self, message: str, accepted: set[str]) -> None:
        super().__init__(message)
        self.accepted = accepted


class _PartlyDelivered(_Delivered, RetryableActionError):
    """Retryable: some service may accept later."""


class _Refused(_Delivered, PermanentActionError):
    """Permanent: every service that failed refused the message with a 4xx."""


async def run(params: NotifyParams, ctx: ActionContext) -> None:
    """Resolve the targets, send in a worker thread, and judge apprise's result."""
    services, tags = _resolve(params.to, ctx.targets)
    _check_attachments(params.attach)
    declared = set().union(*(parse_target(v).tags for v in ctx.targets.values()))
    unmatched = [t for t in tags if t not in declared]
    if unmatched and services:
        ctx.log.warning(
            "[%s] notify: no target has tag %s; sending to the others",
            ctx.rule,
            ", ".join(unmatched),
        )
    done = frozenset(_delivered.get(ctx.idempotency_key, ()))
    sent = await anyio.to_thread.run_sync(_send, services, tags, params, done)
    if sent.result is None:
        ctx.log.info("[%s] notify: every target already had this message", ctx.rule)
        _delivered.pop(ctx.idempotency_key, None)
        return
    try:
        accepted = outcome(sent.result, sent.labels, sent.secrets, tags)
    except (_PartlyDelivered, _Refused) as err:
        if err.accepted:  # also for a refusal: `dead-letters retry` need not page them again
            _remember(ctx.idempotency_key, err.accepted)
        raise
    finally:
        sent.result.close()
    _delivered.pop(ctx.idempotency_key, None)
    ctx.log.info("[%s] notify sent to %s", ctx.rule, ", ".join(sorted(accepted)))


@hookimpl
def register_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            name="notify",
            params=NotifyParams,
            run=run,
            shorthand="body",
            description="Send a message to Slack, e-mail, Teams... (apprise URLs in targets:).",
            target=lane,
            check=check_call,
        )
    ]


@hookimpl
def check_config(config: LoadedConfig) -> list[str]:
    """Every ``targets:`` URL must be one apprise accepts; problems name only the scheme."""
    problems: list[str] = []
    for name, value in config.config.targets.items():
        entry = parse_target(value)
        if _instantiate(entry.url) is None:
            problems.append(
                f"{config.where('targets', name)}: targets.{name}: apprise does not accept "
                f"this URL ({_scheme_hint(entry.url)})"
            )
    return problems
