"""What a source plugin provides, and what a running source may use.

A source is registered as a :class:`SourceSpec` (plugin name, options schema,
factory).  For each configured instance the bus calls the factory with a
:class:`SourceContext` and awaits the returned source's ``run()``::

    class TickOptions(Options):
        every: Duration = 5.0

    class Tick:
        def __init__(self, ctx: SourceContext) -> None:
            self.ctx = ctx

        async def run(self) -> None:
            while True:
                await self.ctx.emit(Event(type="tick.Tick", source=self.ctx.name))
                await anyio.sleep(self.ctx.options.every)

    @hookimpl
    def register_sources():
        return [SourceSpec(name="tick", options=TickOptions, factory=Tick)]

``run()`` runs until cancelled.  If it raises, the bus logs the error, marks
the source ``reconnecting`` and calls ``run()`` again after a jittered,
growing delay (see :mod:`ccbus.sources.backoff`); it never gives up.  ``await
ctx.emit(event)`` returns once the event's actions are recorded, so a
source that acknowledges to a broker does so after ``emit`` returns.

Report what the connection is doing with ``ctx.set_state(state)``: health,
``/readyz``, ``/metrics`` and the live view show it, and every change *into*
``reconnecting`` is counted as one reconnect of the source
(``ccbus_source_reconnects_total``), so a plugin that runs its own reconnect
loop needs nothing more than ``set_state("reconnecting")`` before it waits
out its :class:`~ccbus.sources.backoff.Backoff` delay.  The states ``/readyz``
understands are in :data:`READY_STATES` and :data:`DEGRADED`; any other
state (``connecting``, ``reconnecting``, ``misconfigured``, ...) means "not
ready".

One message must never stop a source: decode and map each one inside
``await ctx.convert(message, lambda: ...)``.  Whatever that raises (or a
:class:`~ccbus.errors.RefusedInput` with a reason of your own) makes the
message a dead letter, counted on ``/metrics`` and logged, and ``convert``
returns None; acknowledge the message either way (see
:mod:`ccbus.sources.refused`).  ``ctx.refuse(reason, detail, message)`` does
the same for input refused before decoding (a bad signature, a frame too big).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from ccbus.events.envelope import Event
from ccbus.sources.refused import Refusals

T = TypeVar("T")

__all__ = [
    "DEGRADED", "READY_STATES", "BadInputCounter", "DemoSource", "Source", "SourceContext",
    "SourceSpec",
]

#: States in which a source does its job: ``/readyz`` counts it as ready.
READY_STATES = frozenset(
    {"connected", "listening", "subscribed", "running", "replaying", "finished"}
)
#: Working, but not fully (one of two brokers down, a lagging consumer): ready, and said so.
DEGRADED = "degraded"


class BadInputCounter(Protocol):
    """``count_bad_input(reason, amount=1)``: what :attr:`SourceContext.count_bad_input` is."""

    def __call__(self, reason: str, amount: int = 1) -> None: ...


class Source(Protocol):
    """A running source instance."""

    async def run(self) -> None:
        """Produce events with ``ctx.emit`` until cancelled; raise to be restarted."""


@dataclass(slots=True, kw_only=True)
class SourceContext:
    """Handed to a source's factory: its identity, options and the way into the bus."""

    #: The configured instance name; use it as the events' ``source``.
    name: str
    #: The validated options model.
    options: Any
    #: ``await emit(event)``: route it; returns when its actions are recorded.
    emit: Callable[[Event], Awaitable[None]]
    log: logging.Logger
    #: A directory this instance may keep files in (cursors, dead letters).
    state_dir: Path
    #: The directory of the config file: relative paths in options are relative to it.
    config_dir: Path = Path(".")
    #: Routes this source serves on the local HTTP listener: (path, methods, handler).
    routes: list[tuple[str, list[str], Any]] = field(default_factory=list)
    #: ``set_state("connected")`` etc.; shown by health and metrics.
    set_state: Callable[[str], None] = lambda state: None
    #: ``count_bad_input("bad_signature")``: one refused input, by reason, for ``/metrics``;
    #: ``count_bad_input("kernel_drop", 250)`` for many at once (losses a source learns
    #: of in bulk, such as datagrams the kernel dropped).
    #: Prefer :meth:`refuse`, which also logs and keeps the message as a dead letter.
    count_bad_input: BadInputCounter = field(default=lambda reason, amount=1: None)
    #: ``paused()``: why the bus takes no input now (its state directory is full), else
    #: None.  ``emit`` waits meanwhile anyway; a source that can tell its peer to come
    #: back later (an HTTP 503) should do so instead of holding the request.
    paused: Callable[[], str | None] = lambda: None
    #: What this source refused: counts by reason and the dead-letter file.
    refusals: Refusals = field(init=False)

    def __post_init__(self) -> None:
        self.refusals = Refusals(self.name, self.log, self.state_dir, self.count_bad_input)

    async def refuse(self, reason: str, detail: str, message: str | bytes | None = None,
                     **where: Any) -> None:
        """One message cannot be used: count it, log it, keep it as a dead letter.

        ``where`` says where it came from (``topic=``, ``offset=``, ``peer=``...).
        """
        await self.refusals.refuse(reason, detail, message, **where)

    async def convert(self, message: str | bytes | None, convert: Callable[[], T],
                      **where: Any) -> T | None:
        """Decode and map one message with ``convert()``; None if it was refused.

        Whatever ``convert`` raises refuses the message (see
        :mod:`ccbus.sources.refused`) instead of stopping the source: raise
        :class:`~ccbus.RefusedInput` for a reason of your own.  Acknowledge the
        message either way; keep ``emit`` outside ``convert``.
        """
        return await self.refusals.convert(message, convert, **where)

    def add_route(self, path: str, handler: Any, methods: list[str] | None = None) -> None:
        """Serve ``handler`` (a Starlette endpoint) at ``path`` on the local listener."""
        self.routes.append((path, methods or ["POST"], handler))


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSpec:
    """A kind of source, as written in a config's ``plugin:``.

    :param name: the plugin name in configs (``replay``, ``cisco-cvp``).
    :param options: an :class:`~ccbus.config.schema.Options` model of its options.
    :param factory: called with a :class:`SourceContext`; returns a :class:`Source`.
    :param description: one line for ``ccbus plugins`` and the docs.
    """

    name: str
    options: type[BaseModel]
    factory: Callable[[SourceContext], Source]
    description: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSource:
    """A source ``ccbus demo`` runs live, against its plugin's own simulator, in-process.

    :param name: the instance name in the demo (``avaya-live``).
    :param plugin: the source plugin (``avaya``).
    :param options: the source's options.
    :param simulator: ``simulator()`` is an async context manager that starts the
        simulator on loopback and yields option overrides (the URL with the port
        it bound, say), merged into ``options``.
    """

    name: str
    plugin: str
    options: dict[str, Any]
    simulator: Callable[[], AbstractAsyncContextManager[dict[str, Any]]]
