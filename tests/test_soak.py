"""The soak script, short: faults (receiver down, broken and good SIGHUP, SIGKILL and restart)
under a steady feed lose nothing.  ``scripts/soak.py`` runs the long version (docs/operations.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from support import REPO


@pytest.mark.slow
def test_short_soak_loses_nothing(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("soak", REPO / "scripts" / "soak.py")
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    report = soak.soak(duration=20.0, rate=15.0, workdir=tmp_path)
    print(report)
    assert report["lost"] == 0, report
    assert all(feed["accepted"] > 50 for feed in report["feeds"].values()), report
    assert report["broken_reload_kept_old_rules"], report
    assert report["ccbus_exit_code_after_sigterm"] == 0, report
    rss = report["rss_mib"]
    assert rss["samples"] >= 3 and rss["max"] < 2 * rss["first"], rss
