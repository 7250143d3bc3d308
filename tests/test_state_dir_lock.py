"""Two processes on one state directory would deliver twice: the second is refused (#18, 5).

Real ``ccbus run`` processes: the first holds the lock for its life, a
second on the same ``state_dir`` exits at once with a message naming the
first, commands that only read keep working beside the running bus, and
after the first is killed with SIGKILL (the kernel drops its ``flock``) a
new one starts without any clean-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from support import CCBUS, answers, free_port, start_ccbus, wait_until, write

from ccbus.runtime.lock import StateDirLock, StateDirLocked


def config(tmp_path: Path, name: str, port: int, state: Path) -> Path:
    return write(tmp_path / f"{name}.yaml", f"""
        sources:
          in: {{plugin: webhook, options: {{token: lock-test-token}}}}
        state_dir: {state}
        http: {{listen: "127.0.0.1:{port}"}}
    """)


def ccbus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CCBUS, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CCBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})


@pytest.mark.slow
def test_a_second_ccbus_run_on_one_state_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first_port, second_port = free_port(), free_port()
    first_config = config(tmp_path, "first", first_port, state)
    second_config = config(tmp_path, "second", second_port, state)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"

    first = start_ccbus(first_config, first_log)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{first_port}/readyz"), 30,
                   "the first ccbus to be ready", first_log)
        second = start_ccbus(second_config, second_log)
        assert second.wait(60) == 1
        output = second_log.read_text()
        assert (f"another ccbus (pid {first.pid}) is running on state_dir {state}"
                in output), output
        assert "deliver every call twice" in output
        assert "Traceback" not in output
        assert "HTTP listener" not in output and "source in" not in output  # nothing started
        assert not answers(f"http://127.0.0.1:{second_port}/healthz")

        # commands that only read work while the bus runs
        listed = ccbus("dead-letters", "list", "--state-dir", str(state))
        assert listed.returncode == 0, listed.stdout + listed.stderr
        shown = ccbus("status", "--url", f"http://127.0.0.1:{first_port}")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        # a replay through the same config would share the outbox: refused the same way
        events = write(tmp_path / "events.jsonl", '{"type": "lock.Test", "id": "r1"}\n')
        replayed = ccbus("replay", str(events), "-c", str(second_config))
        assert replayed.returncode == 1, replayed.stdout + replayed.stderr
        assert f"another ccbus (pid {first.pid}) is running" in replayed.stderr
        assert "Traceback" not in replayed.stderr
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(20)

    # the kernel dropped the killed process's lock: the next one starts, no clean-up
    third = start_ccbus(second_config, second_log)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{second_port}/readyz"), 30,
                   "a ccbus to start after the first was killed", second_log)
    finally:
        third.send_signal(signal.SIGTERM)
        assert third.wait(30) == 0


def test_the_lock_is_held_until_released(tmp_path: Path) -> None:
    """Within one process too: ``flock`` belongs to the open file, not the process."""
    held = StateDirLock(tmp_path)
    held.acquire()
    with pytest.raises(StateDirLocked, match=rf"pid {os.getpid()}\) is running on state_dir"):
        StateDirLock(tmp_path).acquire()
    held.release()
    again = StateDirLock(tmp_path)
    again.acquire()
    again.release()
