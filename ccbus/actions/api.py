"""What an action plugin provides, and what an action sees when it runs.

An action is registered as an :class:`ActionSpec`: a name used in rules
(``notify``, ``cucm.make_call``), a parameter schema, and an async ``run``.
Rules render the parameters (templates filled from the event), the schema
validates the result, and ``run`` gets the validated model::

    class SayParams(Options):
        text: str

    async def say(params: SayParams, ctx: ActionContext) -> None:
        ctx.log.info("saying %s for rule %s", params.text, ctx.rule)

    @hookimpl
    def register_actions():
        return [ActionSpec(name="say", params=SayParams, run=say, shorthand="text")]

``run`` raises :class:`~ccbus.errors.RetryableActionError` for failures
that may pass later and :class:`~ccbus.errors.PermanentActionError` for the
rest; anything else counts as retryable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ccbus.actions.http_sessions import HttpClients
from ccbus.events.envelope import Event

__all__ = ["ActionContext", "ActionSpec", "idempotency_key"]


def idempotency_key(event: Event, rule: str, index: int) -> str:
    """``<source>/<event id>:<rule>:<action index>``: one call of one rule on one event.

    The source is part of the key because event ids are unique only within
    their source (the bus drops duplicates per source and id): without it,
    two sources sending the same id would share a key, and the outbox,
    which records a key once, would silently drop the second call.
    """
    return f"{event.source}/{event.id}:{rule}:{index}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionContext:
    """Everything an action may use besides its parameters."""

    rule: str
    event: Event
    #: Stable across retries and restarts: ``<source>/<event id>:<rule>:<action index>``
    #: (see :func:`idempotency_key`).
    idempotency_key: str
    log: logging.Logger
    #: Named notification targets from the config (``targets:``).
    targets: Mapping[str, str] = field(default_factory=dict)
    #: Shared HTTP clients (connection pools), one per CA bundle; the bus closes them.
    http: HttpClients = field(default_factory=lambda: HttpClients())
    #: Which attempt this is: 1 for the first, 2 for the first retry, ...
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionSpec:
    """An action rules can call by ``name``.

    :param name: as written in rules; dotted names (``cucm.make_call``) for vendor actions.
    :param params: an :class:`~ccbus.config.schema.Options` model of the rendered parameters.
    :param run: ``async def run(params, ctx)``: do the work, raise on failure.
        What it returns is ``previous`` for the rule's next action (a mapping,
        a dataclass, or an object with ``as_result()``; see docs/rules.md).
    :param shorthand: the parameter a scalar stands for (``- log: "text"``).
    :param side_effects: False for actions that are safe in dry runs (``log``).
    :param inline: set only by ``emit``: ``run`` returns events the bus routes
        at once, in the same step, instead of queueing a call.
    :param description: one line for ``ccbus plugins`` and the docs.
    :param check: ``check(params, config)``: what ``ccbus check`` can know is wrong with
        one call from the config alone, before anything runs (a target name the config
        does not define).  ``params`` are as written in the rule (templates not filled
        in: check only literal values), ``config`` is the :class:`ccbus.LoadedConfig`;
        returns one-line problems.
    """

    name: str
    params: type[BaseModel]
    run: Callable[[Any, ActionContext], Awaitable[Any]]
    shorthand: str | None = None
    side_effects: bool = True
    inline: Callable[[Any, Event, str], list[Event]] | None = None
    description: str = ""
    #: The delivery lane of a call (``"webhook:crm.example:443"``): calls to one
    #: target share its concurrency limit, so a slow target never holds up others.
    target: Callable[[Any], str] | None = None
    check: Callable[[Mapping[str, Any], Any], list[str]] | None = None


