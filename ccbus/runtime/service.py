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
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from ccbus.config.file import ConfigErrors, check_sources, load_config
from ccbus.errors import ConfigError
from ccbus.observe.health import readiness
from ccbus.observe.logs import redact_in_logs
from ccbus.runtime.systemd import Notifier

if TYPE_CHECKING:
    from pathlib import Path

    from ccbus.config.file import LoadedConfig
    from ccbus.plugins import PluginHost
    from ccbus.runtime.bus import Bus

__all__ = ["Service", "status_line"]

log = logging.getLogger("ccbus.runtime.service")

STATUS_INTERVAL = 5.0
#: Config keys a reload applies; changes to the others wait for a restart.
LIVE_KEYS = ("rules", "targets", "log_level")


def status_line(bus: Bus) -> str:
    """One line for ``systemctl status``: readiness, rules, traffic, dead letters."""
    _, ready = readiness(bus)
    total = len(ready["sources"])
    waiting = ", ".join(f"{n} {ready['sources'][n]['state']}" for n in ready["not_ready"])
    degraded = ", ".join(ready["degraded"])
    counters = bus.counters
    dead = sum(v for n, labels, v in counters.snapshot()
               if n == "actions" and labels.get("outcome") == "dead_letter")
    parts = [
        f"{ready['status']}: {total - len(ready['not_ready'])}/{total} sources"
        + (f" ({waiting})" if waiting else "")
        + (f" (degraded: {degraded})" if degraded else ""),
        f"{len(bus.engine.index.rules)} rules",
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
    return fresh, [str(e) for e in check_sources(fresh, plugins)] + plugins.check_config(fresh)


class Service:
    """Runs beside the bus's sources; stopped with them."""

    def __init__(self, bus: Bus, notifier: Notifier) -> None:
        self.bus = bus
        self.notifier = notifier
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
        self._last_status = status_line(self.bus)
        self.notifier.ready(self._last_status)

    def stopping(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.notifier.stopping()

    def reload(self) -> None:
        """Validate and apply the config file and the rules, telling systemd around it."""
        self.notifier.reloading()
        try:
            self.reload_config()
            self.bus.load_rules()
        finally:
            self.ready()

    def reload_config(self) -> bool:
        """Apply the config file's live keys, or refuse the file (False) and say why."""
        bus = self.bus
        path = bus.loaded.path
        if path is None:
            return True
        fresh, problems = checked_config(path, bus.plugins)
        if fresh is not None:  # a refused file's problems may quote its values: hide them too
            bus.redactor.add(fresh.secrets)
            redact_in_logs(fresh.secrets)
            bus.loaded.secrets |= fresh.secrets
        if fresh is None or problems:
            for problem in problems:
                log.error("reload: %s", problem)
            log.error("reload refused: the config has %d problem(s); the running config stays",
                      len(problems))
            bus.counters.inc("config_reload_errors")
            return False
        old = bus.config
        new = fresh.config
        later = [key for key in type(new).model_fields
                 if key not in LIVE_KEYS and getattr(new, key) != getattr(old, key)]
        if later:
            log.warning("reload: %s changed; that takes effect at the next restart",
                        ", ".join(later))
        bus.config = old.model_copy(update={key: getattr(new, key) for key in LIVE_KEYS})
        bus.loaded.config = bus.config
        logging.getLogger().setLevel(bus.config.log_level.upper())
        return True

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            log.info("SIGHUP: reloading config and rules")
            self.reload()
        else:
            log.info("%s: stopping", signal.Signals(signum).name)
            self.stopping()
            self.bus.stop()

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval)

    async def _status(self) -> None:
        while True:
            await anyio.sleep(STATUS_INTERVAL)
            line = status_line(self.bus)
            if line != self._last_status:
                self._last_status = line
                self.notifier.status(line)
