"""What ``/health``, ``/healthz`` and ``/readyz`` answer, and ``ccbus status`` prints.

* ``/healthz``: the event loop answers, nothing more (systemd's watchdog
  covers the same ground from the inside).  A liveness probe restarts a
  process that fails it, so it must not depend on brokers being up.
* ``/readyz``: every source is in one of :data:`~ccbus.sources.api.READY_STATES`
  or says it is ``degraded``.  503 lists the sources that are not ready; a
  degraded source keeps 200 but turns the status to ``degraded``, so a
  dashboard can tell "working, partly" from "working".
* Both answer 503 with status ``not accepting input`` and the ``reason``
  while the state directory is full (see :mod:`ccbus.delivery.outage`):
  the process is alive, but takes no events until there is space.
* ``/health``: everything at once, for people and ``ccbus status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccbus.observe.view import cluster_of
from ccbus.sources.api import DEGRADED, READY_STATES

if TYPE_CHECKING:
    from ccbus.observe.view import BusView, SourceView

__all__ = ["cluster_status", "readiness", "source_status", "status_document"]


def source_status(runtime: SourceView) -> dict[str, Any]:
    return {
        "plugin": runtime.plugin,
        "state": runtime.state,
        "ready": runtime.state in READY_STATES or runtime.state == DEGRADED,
        "restarts": runtime.restarts,
        "reconnects": runtime.reconnects,
        "last_error": runtime.last_error,
        "since": runtime.since,
    }


def readiness(bus: BusView) -> tuple[bool, dict[str, Any]]:
    """Whether the bus is ready, and the per-source document ``/readyz`` answers."""
    sources = {name: source_status(r) for name, r in bus.sources.items()}
    not_ready = sorted(n for n, s in sources.items() if not s["ready"])
    degraded = sorted(n for n, s in sources.items() if s["state"] == DEGRADED)
    problem = bus.storage_problem()
    ready = bus.started.is_set() and not not_ready and problem is None
    member = cluster_of(bus)
    if member is not None and not member.leading:  # a standby: alive, not ready, and why
        return False, {"status": "standby", "reason": member.reason(), "not_ready": [],
                       "degraded": [], "sources": sources, "cluster": cluster_status(bus)}
    if not bus.started.is_set():
        status = "starting"
    elif problem is not None:
        status = "not accepting input"
    elif not_ready:
        status = "not ready"
    else:
        status = "degraded" if degraded else "ready"
    doc: dict[str, Any] = {"status": status, "not_ready": not_ready, "degraded": degraded,
                           "sources": sources}
    if problem is not None:
        doc["reason"] = problem
    if member is not None:
        doc["cluster"] = cluster_status(bus)
    return ready, doc


def cluster_status(bus: BusView) -> dict[str, Any] | None:
    """The group part of ``/health`` and ``/readyz`` (None without ``cluster:``)."""
    member = cluster_of(bus)
    if member is None:
        return None
    return {"group": member.group, "instance": member.instance, "role": member.role,
            "leader": member.leader, "epoch": member.epoch, "failovers": member.failovers,
            "reason": member.reason()}


def status_document(bus: BusView, outbox_depth: int, dead_letters: int) -> dict[str, Any]:
    """``/health``: readiness, rules, counters that matter at a glance."""
    _, ready = readiness(bus)
    counters = bus.counters
    return {
        "status": ready["status"],
        "reason": ready.get("reason"),
        "rules": len(bus.rule_names()),
        "sources": ready["sources"],
        "events_in": counters.total("events_in"),
        "actions": {
            outcome: sum(v for n, labels, v in counters.snapshot()
                         if n == "actions" and labels.get("outcome") == outcome)
            for outcome in ("ok", "retry", "dead_letter", "dry_run")
        },
        "outbox_depth": outbox_depth,
        "dead_letters": dead_letters,
        "cluster": cluster_status(bus),
    }
