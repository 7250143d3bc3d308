"""The soak script, short: faults under a steady feed from three sources lose nothing.

The feeds are the inbound webhook, a replay recording and CVP call events published to a
private ActiveMQ; the faults are the receiver down, a broker restart with ccbus connected,
broken and good SIGHUP, and SIGKILL with a second broker restart while ccbus is down (CVP
events waiting in the broker for its durable subscriptions).  ``scripts/soak.py`` runs the
long version (docs/operations.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ccbus_peers.activemq import activemq_available
from support import REPO


@pytest.mark.slow
def test_short_soak_loses_nothing(tmp_path: Path) -> None:
    reason = activemq_available()
    if reason:  # not a skip: CI installs ActiveMQ, so a missing broker is a failure
        pytest.fail(reason, pytrace=False)
    spec = importlib.util.spec_from_file_location("soak", REPO / "scripts" / "soak.py")
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    report = soak.soak(duration=30.0, rate=15.0, workdir=tmp_path)
    print(report)
    assert report["lost"] == 0, report
    assert report["feeds"].keys() == {"webhook", "replay", "cvp"}, report
    assert all(feed["expected"] > 50 for feed in report["feeds"].values()), report
    connected = report["broker_restarts"]["while_connected"]
    assert connected["reconnected_s"] is not None, report  # the CVP source came back
    assert connected["first_new_delivery_s"] is not None, report  # and its events flow again
    # CVP events were waiting in the broker when it restarted, and none was lost
    assert report["broker_restarts"]["while_ccbus_down"]["backlog"] > 0, report
    assert report["broken_reload_kept_old_rules"], report
    assert report["ccbus_exit_code_after_sigterm"] == 0, report
    rss = report["rss_mib"]
    assert rss["samples"] >= 5 and rss["max"] < 2 * rss["first"], rss
