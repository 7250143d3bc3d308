"""``ccbus run`` as a systemd service: signals, reload, watchdog and status.

::

    start ─▶ READY=1 + STATUS=...        (sources started, listener up)
    every WATCHDOG_USEC/2 ─▶ WATCHDOG=1  (from the event loop: a stuck loop stops them)
    every few seconds ─▶ STATUS=...      (only when the line changed)
    SIGHUP ─▶ RELOADING=1 + MONOTONIC_USEC, reload config and rules, READY=1
    SIGTERM/SIGINT ─▶ STOPPING=1, the bus drains and exits 0

A reload validates first, with the checks ``ccbus run`` makes before it
starts (the schema, every source's options, every plugin's ``check_config``
hook, such as notify's check of the ``targets:`` URLs): a config with
errors is refused as a whole (the running one stays, and the log says why),
and a rule file with errors keeps its previous rules (see
:meth:`ccbus.runtime.bus.Bus.load_rules`).  Secrets the new file brings (a
credential or environment variable it newly refers to) are added to the
log's and the listener's redaction before anything about it is logged,
whether the file is applied or refused.  Of the config,
``rules``, ``targets`` and ``log_level`` apply at once; a change to anything
else (sources, the listener, the state directory) is named in the log as
taking effect at the next restart.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from ccbus.config.file import ConfigErrors, load_config
from ccbus.errors import ConfigError
from ccbus.observe.health import readiness
from ccbus.runtime.systemd import Notifier

if TYPE_CHECKING:
    from pathlib import Path

    from ccbus.config.file import LoadedConfig
    from ccbus.observe.view import BusView
    from ccbus.plugins import PluginHost

__all__ = ["LIVE_KEYS", "Service", "checked_config", "status_line"]

log = logging.getLogger("ccbus.runtime.service")

STATUS_INTERVAL = 5.0
#: Config keys a reload applies; changes to the others wait for a restart.
LIVE_KEYS = ("rules", "targets", "log_level")


def status_line(bus: BusView) -> str:
    """One line for ``systemctl status``: readiness, rules, traffic, dead letters."""
    _, ready = readiness(bus)
    total = len(ready["sources"])
    waiting = ", ".join(f"{n} {ready['sources'][n]['state']}" for n in ready["not_ready"])
    degraded = ", ".join(ready["degraded"])
    counters = bus.counters
    dead = sum(v for n, labels, v in counters.snapshot()
               if n == "actions" and labels.get("outcome") == "dead_letter")
    if "reason" in ready:  # the state directory is full: that is the news
        return f"{ready['status']}: {ready['reason']}"
    parts = [
        f"{ready['status']}: {total - len(ready['not_ready'])}/{total} sources"
        + (f" ({waiting})" if waiting else "")
        + (f" (degraded: {degraded})" if degraded else ""),
        f"{len(bus.rule_names())} rules",
        f"{counters.total('events_in'):.0f} events in",
        f"{dead:.0f} calls dead-lettered",
    ]
    return "; ".join(parts)


def checked_config(path: Path, plugins: PluginHost) -> tuple[LoadedConfig | None, list[str]]:
    """The config at ``path`` (None if it does not load) and what ``ccbus run`` would refuse."""
    try:
        fresh = load_config(path)
    except ConfigErrors as err:
        return None, [str(e) for e in err.errors]
    except ConfigError as err:
        return None, [str(err)]
    problems = [str(e) for e in plugins.check_sources(fresh)] + plugins.check_config(fresh)
    if problems:  # a plugin's schema may quote an option's value: an expanded secret is masked
        book = fresh.secret_book()
        problems = [book.redact(p) for p in problems]
    return fresh, problems


class Service:
    """Runs beside the bus's sources; stopped with them.

    It is handed what it acts on (a view to report from, and the bus's ``reload``
    and ``stop``), not the bus: the service decides *when*, the bus *how*.
    """

    def __init__(
        self,
        view: BusView,
        notifier: Notifier,
        *,
        reload: Callable[[], None],
        stop: Callable[[], None],
    ) -> None:
        self.view = view
        self.notifier = notifier
        self._reload = reload
        self._stop = stop
        self._stopping = False
        self._last_status = ""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Handle signals (installed before ``started``), beat the watchdog, update STATUS."""
        with anyio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:
                if self.notifier.watchdog_interval is not None:
                    tg.start_soon(self._watchdog, self.notifier.watchdog_interval)
                if self.notifier.enabled:
                    tg.start_soon(self._status)
                task_status.started()
                async for signum in signals:
                    self._on_signal(signum)

    def ready(self) -> None:
        self._last_status = status_line(self.view)
        self.notifier.ready(self._last_status)

    def stopping(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.notifier.stopping()

    def reload(self) -> None:
        """Reload config and rules (the bus's ``reload``), telling systemd around it."""
        self.notifier.reloading()
        try:
            self._reload()
        finally:
            self.ready()

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            log.info("SIGHUP: reloading config and rules")
            self.reload()
        else:
            log.info("%s: stopping", signal.Signals(signum).name)
            self.stopping()
            self._stop()

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval)

    async def _status(self) -> None:
        while True:
            await anyio.sleep(STATUS_INTERVAL)
            line = status_line(self.view)
            if line != self._last_status:
                self._last_status = line
                self.notifier.status(line)
