"""What the files of issue #18 cost now: ``ccbus check`` on each, and one fan-out event.

Each attack file is written to a temporary directory and checked by a fresh
``ccbus check`` process; the script reports its wall time, its peak RSS
(``wait4``'s ``ru_maxrss``) and its exit status, and compares with a check
of a small valid rule file in the same run (the baseline: what a process
start and the plugins cost).  Then one event goes through a real
:class:`~ccbus.runtime.bus.Bus` whose rule emits 4 events of its own type
(87,380 derived events without the fan-out limit), and the script reports
how long ``publish`` held the loop and how many firings it made.

Targets: each file refused (exit 1) within 5 s and 200 MB peak RSS; the
fan-out event routed within 250 ms (the loop stall the issue allows).  This is
a benchmark: it always exits 0.

    .venv/bin/python bench/costly_files_bench.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CCBUS = str(Path(sys.executable).parent / "ccbus")
MAX_SECONDS = 5.0
MAX_RSS_MB = 200.0
MAX_FAN_OUT_SECONDS = 0.25


def attacks(directory: Path) -> dict[str, list[str]]:
    """Attack name -> ``ccbus check`` arguments, files written under ``directory``."""
    from test_costly_files import alias_bomb, deep_config, deep_rules

    def rules(name: str, text: str) -> list[str]:
        folder = directory / name
        folder.mkdir()
        (folder / "r.yaml").write_text(text)
        return ["--rules", str(folder)]

    config = directory / "deep.yaml"
    config.write_text(deep_config(5_000))
    return {
        "baseline: a valid rule file": rules("ok", "rules: [{name: r, on: a, do: [log: x]}]\n"),
        "config nested 5,000 levels": ["-c", str(config)],
        "rule file nested 10,000 levels": rules("deep", deep_rules(10_000)),
        f"alias bomb ({len(alias_bomb())} bytes, 9**7 values)": rules("bomb", alias_bomb()),
        "rule file of 1 MiB + 9 bytes": rules("big", "# filler\n" * (1024 * 1024 // 9 + 1)),
    }


def check(args: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MB and exit status of ``ccbus check ARGS``."""
    env = {**os.environ, "CCBUS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen([CCBUS, "check", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss / 1024, proc.returncode


def fan_out(directory: Path) -> tuple[float, int, float]:
    """Seconds one event of a 4-emit rule holds ``Bus.publish``, its firings, drops."""
    from ccbus.config.file import load_config
    from ccbus.events.envelope import Event
    from ccbus.plugins import PluginHost
    from ccbus.runtime.bus import Bus

    (directory / "fan").mkdir()
    (directory / "fan" / "r.yaml").write_text(
        "rules:\n  - name: fan\n    on: fan.out\n    do:\n"
        + "      - emit: {type: fan.out}\n" * 4)
    config = directory / "fan.yaml"
    config.write_text("rules: [fan]\nstate_dir: state\nhttp: {enabled: false}\n")
    bus = Bus(load_config(config), PluginHost(autoload=False), persist_state=False)
    logging.disable(logging.WARNING)  # the drop's one log line is not the figure
    started = time.perf_counter()
    anyio.run(bus.publish, Event(type="fan.out", source="bench", id="f1", data={}))
    elapsed = time.perf_counter() - started
    return elapsed, int(bus.counters.total("rule_fired")), bus.counters.total("emit_dropped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    figures: dict[str, Any] = {}
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="ccbus-costly-") as tmp:
        print(f"{'ccbus check on':44} {'seconds':>8} {'peak MB':>8} {'exit':>5}")
        for name, args in attacks(Path(tmp)).items():
            seconds, rss, code = check(args)
            figures[name] = {"seconds": round(seconds, 3), "peak_rss_mb": round(rss, 1),
                             "exit": code}
            print(f"{name:44} {seconds:8.2f} {rss:8.1f} {code:5}")
            if not name.startswith("baseline"):
                verdicts.append(code == 1 and seconds <= MAX_SECONDS and rss <= MAX_RSS_MB)
        seconds, fired, dropped = fan_out(Path(tmp))
    figures["fan-out event"] = {"seconds": round(seconds, 4), "firings": fired,
                                "emits_dropped": dropped}
    print(f"\none event, rule with 4 emits of its own type: {seconds * 1000:.1f} ms, "
          f"{fired} firings, {dropped:.0f} emits dropped")
    verdicts.append(seconds <= MAX_FAN_OUT_SECONDS)
    print("PASS" if all(verdicts) else "ABOVE TARGET")
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
