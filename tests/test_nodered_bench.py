"""``bench/nodered_bench.py``'s ccbus half, against a real ``ccbus run``, so the script does not rot.

The benchmark is not a test (its figures depend on the host), but its
plumbing is: a ``ccbus run`` process configured with the ``webhook`` source
and a ``webhook`` action, a load generator and a receiver in their own
processes, CPU and RSS read with psutil, the JSON it writes.  This runs it
with ``--quick`` and a one-second load at every load shape and checks that
every part produced figures and that nothing accepted was lost.  The
Node-RED half needs the npm registry and stays out of the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

pytestmark = pytest.mark.slow


def test_the_ccbus_half_of_the_node_red_benchmark_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    command = [sys.executable, str(REPO / "bench" / "nodered_bench.py"), "--quick",
               "--systems", "ccbus", "--duration", "1", "--rates", "200",
               "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| load | measured | ccbus, outbox on |" in done.stdout
    doc = json.loads(out.read_text())
    assert doc["ratio"] is None  # no Node-RED in this run
    assert doc["settings"]["systems"] == ["ccbus"]
    figures = doc["medians"]["ccbus"]
    assert set(figures) == {"200/s", "saturation", "saturation, receiver +50 ms"}
    for load, fig in figures.items():
        assert fig["accepted"] > 0, (load, fig)
        assert fig["delivered"] > 0, (load, fig)
        assert fig["lost"] == 0, (load, fig)  # accepted means recorded: at least once
        assert 0 < fig["p50_ms"] <= fig["p99_ms"], (load, fig)
        assert fig["cpu_s_per_1000"] > 0, (load, fig)
        assert 10 < fig["peak_rss_mb"] < 1000, (load, fig)
    paced = figures["200/s"]
    # one event in four matches, and every accepted match arrived
    assert paced["delivered"] == pytest.approx(paced["accepted"] / 4, abs=1)
    assert len(doc["runs"]) == 3
