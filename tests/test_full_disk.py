"""A full state directory is an outage to ride out, not a crash (issue #18, part 4).

The state directory is a small tmpfs, filled to the last byte and freed
again, under a real bus: a ``ccbus run`` process with the webhook source
and a real HTTP receiver, and an in-process bus whose events arrive as a
broker source's do (acknowledged once ``emit`` returns).  Mounting needs
root (the CI machine runs the tests as root); elsewhere these tests skip
and say why.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from http_receiver import HttpReceiver
from support import CCBUS, answers, free_port, start_ccbus, wait_until, write

from ccbus import Event
from ccbus.delivery import outage
from ccbus.testing import running_bus

#: The tmpfs: room for the outbox and rule state, and for what piles up while full.
SIZE = "32m"
TOKEN = "full-disk-token"


def mount_tmpfs(where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700",
                               "ccbus-test", str(where)], capture_output=True, text=True,
                              timeout=30)
    except FileNotFoundError:
        pytest.skip("cannot mount a tmpfs as the state directory: no mount command here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs as the state directory here (needs root or "
                    f"CAP_SYS_ADMIN; running as uid {os.getuid()}): {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/state``, a tmpfs of :data:`SIZE`; unmounted after the test."""
    state = tmp_path / "state"
    mount_tmpfs(state)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], capture_output=True, timeout=30)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem has no byte left; returns it (delete it to free)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def test_an_outage_is_logged_once_then_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many writes fail and probes find no room: one line, then one a minute."""
    caplog.set_level(logging.INFO, logger="ccbus.delivery.outage")
    full = outage.StorageOutage("the state directory /srv/state")
    for _ in range(100):
        full.begin("recording calls", OSError(errno.ENOSPC, "No space left on device"))
        full.remind()
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "/srv/state is full (No space left on device, while recording calls)" in caplog.text
    assert full.describe() is not None and "not accepting input" in full.describe()
    monkeypatch.setattr(outage, "REMIND_INTERVAL", 0.0)  # a minute later
    full.remind()
    assert "still full (No space left on device)" in caplog.records[-1].getMessage()
    full.end()
    assert "takes writes again" in caplog.records[-1].getMessage()
    assert full.describe() is None and full.count == 1
    assert outage.storage_error(OSError(errno.EACCES, "denied")) is None  # not an outage


# -- a real `ccbus run` with the webhook source ------------------------------------------


def post(client: httpx.Client, port: int, n: int) -> httpx.Response:
    return client.post(f"http://127.0.0.1:{port}/events/in",
                       headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"type": "disk.Test", "id": f"e{n}", "data": {"n": n}})


def status(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CCBUS, "status", "--url", f"http://127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "CCBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})


@pytest.mark.slow
def test_ccbus_run_rides_out_a_full_state_directory(tmp_path: Path, small_disk: Path) -> None:
    inbound = free_port()
    log = tmp_path / "ccbus.log"
    receiver = HttpReceiver().start()
    write(tmp_path / "rules" / "forward.yaml", f"""
        rules:
          - name: forward
            on: disk.*
            do:
              - webhook: {{url: "{receiver.url_for('/in')}", json: {{n: "{{n}}"}}}}
    """)
    config = write(tmp_path / "ccbus.yaml", f"""
        sources:
          in: {{plugin: webhook, options: {{token: {TOKEN}}}}}
        rules: [rules]
        state_dir: {small_disk}
        http: {{listen: "127.0.0.1:{inbound}"}}
        delivery: {{backoff_initial: 0.2, backoff_cap: 0.5, attempts: 1000}}
    """)
    base = f"http://127.0.0.1:{inbound}"
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # what systemctl status shows
    systemd.bind(str(tmp_path / "notify"))
    systemd.settimeout(0.1)
    statuses: list[str] = []

    def status_said(text: str) -> bool:
        try:
            while True:
                statuses.extend(line[len("STATUS="):] for line in
                                systemd.recv(4096).decode().splitlines()
                                if line.startswith("STATUS="))
        except (TimeoutError, BlockingIOError):
            pass
        return any(text in line for line in statuses)

    bus = start_ccbus(config, log, env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
    try:
        wait_until(lambda: answers(base + "/readyz"), 30, "ccbus to be ready", log)
        with httpx.Client(timeout=10) as client:
            for n in range(5):
                assert post(client, inbound, n).status_code == 202
            receiver.wait_for(5, timeout=20)

            filler = fill(small_disk)
            wait_until(lambda: httpx.get(base + "/readyz", timeout=5).status_code == 503, 20,
                       "/readyz to say the disk is full", log)
            ready = httpx.get(base + "/readyz", timeout=5).json()
            assert ready["status"] == "not accepting input"
            assert f"the state directory {small_disk} is full" in ready["reason"]
            shown = status(inbound)
            assert shown.returncode == 1, shown.stdout + shown.stderr
            assert "status: not accepting input" in shown.stdout
            assert f"the state directory {small_disk} is full" in shown.stdout
            # commands that only read work on the full disk, beside the running bus
            listed = subprocess.run([CCBUS, "dead-letters", "list", "--state-dir",
                                     str(small_disk)], capture_output=True, text=True,
                                    timeout=30)
            assert listed.returncode == 0, listed.stdout + listed.stderr

            refused = [post(client, inbound, n) for n in range(5, 15)]
            assert {r.status_code for r in refused} == {503}, [r.text for r in refused]
            assert {r.headers.get("retry-after") for r in refused} == {"30"}
            time.sleep(2.5)  # probes fail meanwhile: they must not fill the log
            metrics = httpx.get(base + "/metrics", timeout=5).text
            assert "\nccbus_storage_full 1\n" in metrics
            assert "\nccbus_storage_outages_total 1\n" in metrics
            assert ('ccbus_source_bad_input_total{reason="not_accepting",source="in"} 10'
                    in metrics)
            assert bus.poll() is None, "ccbus must stay up on a full disk"
            assert answers(base + "/healthz")  # alive, only not ready
            wait_until(lambda: status_said(f"not accepting input: the state directory "
                                           f"{small_disk} is full"), 20,
                       "systemd's status line to say the disk is full", log)

            os.remove(filler)
            wait_until(lambda: answers(base + "/readyz"), 20, "ccbus to resume by itself", log)
            for n in range(5, 15):  # the senders try again, as Retry-After told them
                assert post(client, inbound, n).status_code == 202
        wait_until(lambda: len({r.json()["n"] for r in receiver.requests}) >= 15, 30,
                   "every event's call to arrive", log)
    finally:
        bus.send_signal(signal.SIGTERM)
        bus.wait(30)
        receiver.stop()
        systemd.close()
    assert sorted({r.json()["n"] for r in receiver.requests}) == list(range(15))
    output = log.read_text()
    assert bus.returncode == 0, output
    assert "Traceback" not in output
    full_lines = [line for line in output.splitlines() if "is full (" in line]
    assert len(full_lines) == 1, full_lines  # one line when it began, none per probe or request
    assert "not accepting input" in full_lines[0]
    assert "takes writes again" in output


# -- emit, as a broker source uses it -------------------------------------------------------

EVENTS = 300
#: Large enough that the outbox must grow, whatever space SQLite can reuse.
PAD = "x" * 20_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.slow
async def test_emit_waits_while_the_disk_is_full_and_loses_nothing(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker source acknowledges a message once ``emit`` returned.  While the disk is
    full ``emit`` does not return (nothing is acknowledged, the broker keeps the rest),
    and once there is space every event's call is recorded and delivered.

    The free-space check is off here (``MIN_FREE_BYTES = 0``), so the outage begins
    where it begins without it: with a write of the outbox that fails.
    """
    monkeypatch.setattr(outage, "MIN_FREE_BYTES", 0)
    receiver = HttpReceiver(port=free_port())  # down: calls pile up while the disk fills
    rules = [{"name": "forward", "on": "disk.*",
              "do": [{"webhook": {"url": receiver.url_for("/in"),
                                  "json": {"n": "{n}", "pad": "{pad}"}}}]}]
    acknowledged: list[int] = []
    async with running_bus(tmp_path, rules=rules, outbox=True, persist_state=True,
                           delivery={"attempts": 10_000}) as harness:
        bus = harness.bus
        filler = fill(small_disk)

        async def broker() -> None:
            for n in range(EVENTS):
                await bus.publish(Event(type="disk.Test", source="broker", id=f"b{n}",
                                        data={"n": n, "pad": PAD}))
                acknowledged.append(n)

        async with anyio.create_task_group() as tg:
            tg.start_soon(broker)
            await harness.wait_until(lambda: bus.outage.active, timeout=20,
                                     what="the outage to begin")
            ready = bus.storage_problem()
            assert ready is not None and "is full" in ready
            await anyio.sleep(2.0)
            held = len(acknowledged)
            assert held < EVENTS, "emit returned for events whose calls were not recorded"
            await anyio.sleep(2.0)
            assert len(acknowledged) <= held + 5, "input must stop while the disk is full"

            os.remove(filler)
            receiver.start()
            await harness.wait_until(lambda: len(acknowledged) == EVENTS, timeout=60,
                                     what="every event to be recorded once there is space")
        assert not bus.outage.active
        await harness.wait_until(
            lambda: len({r.json()["n"] for r in receiver.requests}) == EVENTS, timeout=60,
            what="every call to arrive")
    receiver.stop()
    assert sorted({r.json()["n"] for r in receiver.requests}) == list(range(EVENTS))


@pytest.mark.anyio
async def test_stopping_on_a_full_disk_is_no_crash(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGTERM while the disk is full: rule state that cannot be saved is reported, and
    the bus stops as usual (it used to end in a traceback from the last save)."""
    monkeypatch.setattr(outage, "MIN_FREE_BYTES", 0)
    rules = [{"name": "counted", "on": "disk.*", "count": {"per": "n", "at_least": 5,
                                                          "within": "10m"},
              "do": [{"log": {"message": "five"}}]}]
    async with running_bus(tmp_path, rules=rules, outbox=True, persist_state=True) as harness:
        await harness.publish("disk.Test", n=1)  # rule state changes: saved within a second
        fill(small_disk)
    assert "rule state changes since the last save are lost" in caplog.text
