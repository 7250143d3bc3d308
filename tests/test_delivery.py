"""The outbox: record before running, retry with backoff, dead letters, lanes, restarts."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner
from support import CCBUS, answers, free_port, wait_until, write

from ccbus import ActionSpec, Event, Options, hookimpl
from ccbus.cli.app import cli
from ccbus.config.file import load_config
from ccbus.delivery.store import Pending, SqliteDeliveryStore, StateDirError
from ccbus.errors import PermanentActionError, RetryableActionError
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Flaky:
    """Action `flaky`: fails as told per lane, records successful calls."""

    def __init__(self) -> None:
        self.fail_next: dict[str, list[Exception]] = {}
        self.hang: set[str] = set()
        self.delivered: list[tuple[str, str, int]] = []
        self.attempt_times: list[float] = []

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        flaky = self

        class Params(Options):
            lane: str = "a"
            value: str = ""

        async def run(params: Params, ctx: Any) -> None:
            flaky.attempt_times.append(time.monotonic())
            if params.lane in flaky.hang:
                await anyio.sleep(60)
            failures = flaky.fail_next.get(params.lane)
            if failures:
                raise failures.pop(0)
            flaky.delivered.append((params.value, ctx.idempotency_key, ctx.attempt))

        return [ActionSpec(name="flaky", params=Params, run=run, shorthand="value",
                           target=lambda p: f"lane:{p.lane}")]


CONFIG = """
http: {enabled: false}
state_dir: state
delivery:
  backoff_initial: 0.05
  backoff_cap: 0.2
  attempts: 4
  actions:
    flaky: {concurrency: 1}
"""

RULES = """
rules:
  - name: go
    on: t.go
    do: [flaky: {lane: "{lane}", value: "{value}"}]
  - name: broken-template
    on: t.broken
    do:
      - flaky: "{missing_field}"
      - flaky: {value: fine}
      - flaky: {value: "{calls} calls, {100 * abandoned / calls}% abandoned"}
"""


def make_bus(tmp_path: Path, flaky: Flaky, config: str = CONFIG) -> Bus:
    write(tmp_path / "rules" / "r.yaml", RULES)
    path = write(tmp_path / "ccbus.yaml", config)
    return Bus(load_config(path), PluginHost(autoload=False, extra=[flaky]))


def go(lane: str = "a", value: str = "v", event_id: str | None = None) -> Event:
    event = Event(type="t.go", source="test", data={"lane": lane, "value": value})
    if event_id:
        event.id = event_id
    return event


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def running(bus: Bus, body: Any) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        await body()
        bus.stop()


def outbox(tmp_path: Path) -> SqliteDeliveryStore:
    return SqliteDeliveryStore(tmp_path / "state" / "delivery.sqlite3")


async def test_retryable_failures_are_retried_with_backoff(tmp_path: Path) -> None:
    flaky = Flaky()
    flaky.fail_next["a"] = [RetryableActionError("503 from upstream"), ConnectionError("reset")]
    bus = make_bus(tmp_path, flaky)

    async def body() -> None:
        await bus.publish(go(value="x"))
        await wait_for(lambda: flaky.delivered)

    await running(bus, body)
    [(value, key, attempt)] = flaky.delivered
    assert value == "x" and attempt == 3 and key.endswith(":go:0")
    gaps = [b - a for a, b in zip(flaky.attempt_times, flaky.attempt_times[1:], strict=False)]
    assert all(g >= 0.025 for g in gaps), gaps  # jittered, at least half the backoff step
    assert outbox(tmp_path).pending_count() == 0


async def test_a_short_backoff_is_kept_not_rounded_up_to_the_poll_interval(
    tmp_path: Path,
) -> None:
    """Three retries with backoff 0.05-0.2 s take a few tenths of a second; waiting for the
    dispatcher's regular 0.5 s poll each time would take over a second."""
    flaky = Flaky()
    flaky.fail_next["a"] = [RetryableActionError(f"503 number {i}") for i in range(3)]
    bus = make_bus(tmp_path, flaky)

    async def body() -> None:
        await bus.publish(go(value="x"))
        await wait_for(lambda: flaky.delivered)

    await running(bus, body)
    assert len(flaky.attempt_times) == 4
    assert flaky.attempt_times[-1] - flaky.attempt_times[0] < 0.6, flaky.attempt_times


async def test_a_call_past_its_timeout_is_retried_and_the_lane_goes_on(tmp_path: Path) -> None:
    """A call that hangs is cut off at the action's timeout and retried; the call queued
    behind it in the same lane (concurrency 1) runs normally."""
    flaky = Flaky()
    flaky.hang.add("a")
    config = CONFIG.replace("flaky: {concurrency: 1}", "flaky: {concurrency: 1, timeout: 0.3}")
    bus = make_bus(tmp_path, flaky, config)

    async def body() -> None:
        await bus.publish(go(value="first"))
        await bus.publish(go(value="second"))
        await wait_for(lambda: flaky.attempt_times)
        flaky.hang.clear()  # the first attempt is already hanging
        await wait_for(lambda: len(flaky.delivered) == 2)

    await running(bus, body)
    assert sorted((value, attempt) for value, _, attempt in flaky.delivered) == [
        ("first", 2), ("second", 1),
    ]
    assert bus.counters.get("actions", action="flaky", outcome="retry") == 1
    assert 0.3 <= flaky.attempt_times[1] - flaky.attempt_times[0] < 5


async def test_a_failing_target_is_logged_once_a_minute_and_counted_every_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hours of retries against a dead target must not flood the journal."""
    flaky = Flaky()
    flaky.fail_next["a"] = [RetryableActionError(f"503 number {i}") for i in range(3)]
    flaky.fail_next["b"] = [RetryableActionError("reset")]
    bus = make_bus(tmp_path, flaky)

    async def body() -> None:
        await bus.publish(go(lane="a", value="x"))
        await bus.publish(go(lane="a", value="y"))
        await bus.publish(go(lane="b", value="z"))
        await wait_for(lambda: len(flaky.delivered) == 3)

    with caplog.at_level("WARNING", logger="ccbus.delivery"):
        await running(bus, body)
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 1, retries  # four failures of one rule's `flaky` calls
    assert "503 number 0" in retries[0]
    assert bus.counters.get("actions", action="flaky", outcome="retry") == 4


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    flaky = Flaky()
    flaky.fail_next["a"] = [RetryableActionError("429", retry_after=0.6)]
    bus = make_bus(tmp_path, flaky)

    async def body() -> None:
        await bus.publish(go())
        await wait_for(lambda: flaky.delivered)

    await running(bus, body)
    assert flaky.attempt_times[1] - flaky.attempt_times[0] >= 0.6


async def test_permanent_failures_and_exhausted_attempts_become_dead_letters(
        tmp_path: Path) -> None:
    flaky = Flaky()
    flaky.fail_next["p"] = [PermanentActionError("404 Not Found: no such hook")]
    flaky.fail_next["r"] = [RetryableActionError(f"timeout {i}") for i in range(10)]
    bus = make_bus(tmp_path, flaky)
    store = outbox(tmp_path)

    async def body() -> None:
        await bus.publish(go(lane="p"))
        await bus.publish(go(lane="r"))
        await wait_for(lambda: store.dead_count() == 2)

    await running(bus, body)
    letters = {d.lane: d for d in store.dead_letters()}
    assert letters["lane:p"].reason == "404 Not Found: no such hook"
    assert letters["lane:p"].attempts == 1
    assert letters["lane:r"].reason.startswith("gave up after 4 attempt(s)")
    assert "timeout 3" in letters["lane:r"].reason
    assert store.pending_count() == 0 and flaky.delivered == []


async def test_a_call_older_than_max_age_is_a_dead_letter_saying_so(tmp_path: Path) -> None:
    """Attempts are plenty; age is the limit that ends a lane that always fails."""
    flaky = Flaky()
    flaky.fail_next["down"] = [RetryableActionError("connection refused")] * 1000
    config = CONFIG.replace("{concurrency: 1}", "{concurrency: 1, attempts: 1000, max_age: 1s}")
    bus = make_bus(tmp_path, flaky, config)
    store = outbox(tmp_path)

    async def body() -> None:
        await bus.publish(go(lane="down"))
        await wait_for(lambda: store.dead_count() == 1, timeout=5)

    await running(bus, body)
    [letter] = store.dead_letters()
    assert 2 <= letter.attempts < 1000 and len(flaky.attempt_times) == letter.attempts
    assert "the next would start past max_age (1s)" in letter.reason
    assert letter.reason.endswith("; last error: connection refused")
    assert 0.5 < letter.failed_at - letter.created < 2.0
    assert store.pending_count() == 0 and flaky.delivered == []


async def test_a_template_failure_is_a_dead_letter_and_other_actions_run(tmp_path: Path) -> None:
    """The dead letter names the rule, the action's line, the failing hole and the error."""
    flaky = Flaky()
    bus = make_bus(tmp_path, flaky)
    store = outbox(tmp_path)

    async def body() -> None:
        await bus.publish(Event(type="t.broken", source="test", data={"calls": 0, "abandoned": 0}))
        await wait_for(lambda: flaky.delivered)

    await running(bus, body)
    assert [v for v, _, _ in flaky.delivered] == ["fine"]
    missing, zero = store.dead_letters()
    for letter in (missing, zero):
        assert letter.rule == "broken-template" and letter.params is None
        assert letter.reason.startswith("parameters did not render: line ")
    assert missing.key.startswith("test/") and missing.key.endswith(":broken-template:0")
    assert missing.reason.endswith("no field or key 'missing_field' in '{missing_field}'")
    assert zero.index == 2
    assert zero.reason.endswith(
        "ZeroDivisionError: division by zero in '{100 * abandoned / calls}'"
    )


async def test_a_stuck_lane_does_not_hold_up_the_others(tmp_path: Path) -> None:
    flaky = Flaky()
    flaky.hang.add("slow")
    bus = make_bus(tmp_path, flaky)

    async def body() -> None:
        for i in range(3):
            await bus.publish(go(lane="slow", value=f"s{i}"))
        started = time.monotonic()
        for i in range(20):
            await bus.publish(go(lane="fast", value=f"f{i}"))
        await wait_for(lambda: len(flaky.delivered) == 20, timeout=5)
        assert time.monotonic() - started < 3

    await running(bus, body)
    assert {v for v, _, _ in flaky.delivered} == {f"f{i}" for i in range(20)}


async def test_a_dead_lane_is_probed_not_hammered_and_live_lanes_go_on(tmp_path: Path) -> None:
    """300 calls to a target that always fails: after a few failures in a row the lane
    waits between attempts, so it costs a few attempts a second, not every call's
    attempts; and the live lane's calls all arrive meanwhile."""
    flaky = Flaky()
    flaky.fail_next["dead"] = [RetryableActionError("connection refused")] * 100_000
    bus = make_bus(tmp_path, flaky, CONFIG.replace("attempts: 4", "attempts: 1000"))

    async def body() -> None:
        for i in range(300):
            await bus.publish(go(lane="dead", value=f"d{i}"))
        for i in range(200):
            await bus.publish(go(lane="live", value=f"l{i}"))
        await wait_for(lambda: len(flaky.delivered) == 200, timeout=30)
        await anyio.sleep(2.0)

    await running(bus, body)
    attempts = bus.counters.get("actions", action="flaky", outcome="retry")
    # without the pause each of the 300 calls would retry every 0.05-0.2 s
    assert 5 <= attempts < 150, attempts
    assert {v for v, _, _ in flaky.delivered} == {f"l{i}" for i in range(200)}


async def test_calls_survive_a_stop_and_run_at_the_next_start(tmp_path: Path) -> None:
    flaky = Flaky()
    flaky.hang.add("a")
    first = make_bus(tmp_path, flaky)

    async def recorded() -> None:
        for i in range(5):
            await first.publish(go(value=f"v{i}"))

    import ccbus.runtime.bus

    ccbus.runtime.bus.DRAIN_TIMEOUT, saved = 0.2, ccbus.runtime.bus.DRAIN_TIMEOUT
    try:
        await running(first, recorded)
    finally:
        ccbus.runtime.bus.DRAIN_TIMEOUT = saved
    assert outbox(tmp_path).pending_count() == 5 and flaky.delivered == []

    flaky.hang.clear()
    second = make_bus(tmp_path, flaky)

    async def delivered() -> None:
        await wait_for(lambda: len(flaky.delivered) == 5)

    await running(second, delivered)
    assert sorted(v for v, _, _ in flaky.delivered) == [f"v{i}" for i in range(5)]
    assert outbox(tmp_path).pending_count() == 0


async def test_the_same_call_is_recorded_once(tmp_path: Path) -> None:
    flaky = Flaky()
    flaky.hang.add("a")
    bus = make_bus(tmp_path, flaky)

    async def body() -> None:
        await bus.publish(go(event_id="same"))
        bus.pipeline._seen.clear()  # pretend the dedup window forgot it (a redelivery)
        await bus.publish(go(event_id="same"))

    import ccbus.runtime.bus

    ccbus.runtime.bus.DRAIN_TIMEOUT, saved = 0.1, ccbus.runtime.bus.DRAIN_TIMEOUT
    try:
        await running(bus, body)
    finally:
        ccbus.runtime.bus.DRAIN_TIMEOUT = saved
    assert outbox(tmp_path).pending_count() == 1
    assert bus.counters.total("actions_deduplicated") == 1


async def test_two_sources_with_the_same_event_id_get_a_call_each(tmp_path: Path) -> None:
    """Event ids are unique per source only: the key carries the source, so
    the second source's call is not taken for a repeat of the first."""
    flaky = Flaky()
    # the first attempts fail: both calls are in the outbox at the same time
    flaky.fail_next["a"] = [RetryableActionError("not yet")] * 2
    bus = make_bus(tmp_path, flaky)

    async def body() -> None:
        for source in ("cvp", "genesys"):
            event = go(value=source, event_id="42")
            event.source = source
            await bus.publish(event)
        await wait_for(lambda: len(flaky.delivered) == 2)

    await running(bus, body)
    assert sorted((v, k) for v, k, _ in flaky.delivered) == [
        ("cvp", "cvp/42:go:0"),
        ("genesys", "genesys/42:go:0"),
    ]
    assert bus.counters.total("actions_deduplicated") == 0


async def test_dead_letters_cli_lists_shows_retries_and_purges(tmp_path: Path) -> None:
    flaky = Flaky()
    flaky.fail_next["p"] = [PermanentActionError("bad request")] * 2
    bus = make_bus(tmp_path, flaky)
    store = outbox(tmp_path)
    runner = CliRunner()
    state = str(tmp_path / "state")

    def cli_run(*args: str) -> str:
        result = runner.invoke(cli, [*args, "--state-dir", state],
                               obj={"plugins": PluginHost(autoload=False)})
        assert result.exit_code == 0, result.output
        return result.output

    async def body() -> None:
        await bus.publish(go(lane="p", value="one"))
        await bus.publish(go(lane="p", value="two"))
        await wait_for(lambda: store.dead_count() == 2)
        listing = cli_run("dead-letters", "list")
        assert "2 dead letter(s); 0 call(s) pending" in listing and "bad request" in listing
        first = store.dead_letters()[0]
        shown = json.loads(cli_run("dead-letters", "show", str(first.id)))
        assert shown["params"]["lane"] == "p" and shown["event"]["type"] == "t.go"
        flaky.fail_next["p"] = []
        assert "1 call(s) back in the outbox" in cli_run("dead-letters", "retry", str(first.id))
        await wait_for(lambda: flaky.delivered)  # the running bus picks it up
        assert "1 dead letter(s) purged" in cli_run("dead-letters", "purge", "--all")

    await running(bus, body)
    assert [v for v, _, _ in flaky.delivered] == ["one"]
    assert store.dead_count() == 0


def test_an_unusable_state_dir_is_named_before_anything_starts(tmp_path: Path) -> None:
    blocker = write(tmp_path / "not-a-dir", "a file where the state directory should be\n")
    config = write(tmp_path / "c.yaml", f"state_dir: {blocker}/state\nhttp: {{enabled: false}}\n")
    with pytest.raises(StateDirError, match=f"{blocker}/state/"):
        Bus(load_config(config), PluginHost(autoload=False))
    result = CliRunner().invoke(cli, ["run", "-c", str(config)],
                                obj={"plugins": PluginHost(autoload=False)})
    assert result.exit_code == 1
    assert f"{blocker}/state" in result.output and "writable directory" in result.output


#: A per-file size limit for the child: room for SQLite's 32 KiB shared-memory
#: index and the existing outbox file, not for the startup probe's write.
FULL_DISK_BYTES = 48 * 1024


def test_a_full_disk_at_start_is_an_outage_not_an_exit(tmp_path: Path) -> None:
    """A disk that takes no more writes, with an outbox already there.

    Opening an existing outbox writes nothing, so only the startup probe's
    write can tell.  The full disk is a file-size limit (RLIMIT_FSIZE) on a
    real ``ccbus run`` child: a write past it fails (EFBIG; Python ignores
    SIGXFSZ) as one on a full disk does (ENOSPC), without root or a mount.
    The process starts all the same (a restart must not fail until space
    returns), says why on ``/readyz`` and answers webhooks with 503; the
    tmpfs tests in test_full_disk.py cover the space coming back.
    """
    state = tmp_path / "state"
    yesterday = SqliteDeliveryStore(state / "delivery.sqlite3")
    yesterday.add([Pending(key="k", rule="r", action="log", index=0, lane="log",
                           params="{}", event="{}", created=time.time())])
    yesterday.close()
    port = free_port()
    config = write(tmp_path / "ccbus.yaml", f"""
        sources:
          crm: {{plugin: webhook, options: {{token: a-token}}}}
        state_dir: {state}
        http: {{listen: "127.0.0.1:{port}"}}
    """)

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (FULL_DISK_BYTES, FULL_DISK_BYTES))

    env = {**os.environ, "CCBUS_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    log = tmp_path / "ccbus.log"
    with log.open("wb") as out:
        child = subprocess.Popen([CCBUS, "run", "-c", str(config)], stdout=out, stderr=out,
                                 env=env, preexec_fn=limit_file_size)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(base + "/healthz"), 20, "the listener", log)
        ready = httpx.get(base + "/readyz", timeout=5)
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "not accepting input"
        assert "is full" in ready.json()["reason"]
        answer = httpx.post(base + "/events/crm", headers={"Authorization": "Bearer a-token"},
                            json={"type": "crm.A"}, timeout=5)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
        assert child.poll() is None
    finally:
        child.terminate()
        child.wait(20)
    output = log.read_text()
    assert child.returncode == 0, output
    assert f"the state directory {state} is full" in output
    assert "Traceback" not in output
    store = outbox(tmp_path)  # the failed write harmed nothing: yesterday's row is still
    assert store.pending_count() + store.dead_count() == 1  # there (its params are no log's)


async def test_outbox_off_delivers_from_memory(tmp_path: Path) -> None:
    flaky = Flaky()
    flaky.fail_next["a"] = [RetryableActionError("once")]
    bus = make_bus(tmp_path, flaky, CONFIG + "  outbox: false\n")

    async def body() -> None:
        await bus.publish(go(value="m"))
        await wait_for(lambda: flaky.delivered)

    await running(bus, body)
    assert not (tmp_path / "state" / "delivery.sqlite3").exists()
    assert flaky.delivered[0][0] == "m"


async def test_outbox_off_dead_letters_keep_parameters_and_event(tmp_path: Path) -> None:
    """The memory store keeps calls as objects; its dead letters still hold their JSON."""
    flaky = Flaky()
    flaky.fail_next["a"] = [PermanentActionError("no such user")]
    bus = make_bus(tmp_path, flaky, CONFIG + "  outbox: false\n")

    async def body() -> None:
        await bus.publish(go(value="kept", event_id="ev-1"))
        await wait_for(lambda: bus.delivery_store.dead_count() == 1)

    await running(bus, body)
    [letter] = bus.delivery_store.dead  # type: ignore[attr-defined]
    assert json.loads(letter.params) == {"lane": "a", "value": "kept"}
    assert json.loads(letter.event)["id"] == "ev-1" and letter.reason == "no such user"


async def test_delivered_calls_are_forgotten_in_batches_while_running(tmp_path: Path) -> None:
    """The outbox empties as calls succeed, not only at stop, and its log stays small."""
    flaky = Flaky()
    bus = make_bus(tmp_path, flaky, CONFIG.replace("{concurrency: 1}", "{concurrency: 8}"))
    wal = tmp_path / "state" / "delivery.sqlite3-wal"
    store = outbox(tmp_path)

    async def body() -> None:
        for round_ in range(3):
            for i in range(400):
                await bus.publish(go(value=f"{round_}-{i}"))
            expected = 400 * (round_ + 1)
            await wait_for(lambda: len(flaky.delivered) == expected)  # noqa: B023 - awaited here
            await wait_for(lambda: store.pending_count() == 0)  # forgotten, the bus still running
        # Automatic checkpoints are off; the dispatcher's own (in a thread) copy
        # the log back, so that after a pause it is reused from its start.
        await anyio.sleep(2.5)  # two checkpoint periods
        size = wal.stat().st_size
        for i in range(400):  # about 5 MB of log without a checkpoint
            await bus.publish(go(value=f"last-{i}"))
        await wait_for(lambda: len(flaky.delivered) == 1600)
        assert wal.stat().st_size == size

    await running(bus, body)
    assert len({value for value, _, _ in flaky.delivered}) == 1600


async def test_calls_delivered_just_before_a_stop_do_not_run_again(tmp_path: Path) -> None:
    flaky = Flaky()
    bus = make_bus(tmp_path, flaky)

    async def body() -> None:
        for i in range(20):
            await bus.publish(go(value=str(i)))
        await wait_for(lambda: len(flaky.delivered) == 20)

    await running(bus, body)  # stops at once: the last batch is forgotten on the way out
    assert outbox(tmp_path).pending_count() == 0
    again = Flaky()
    await running(make_bus(tmp_path, again), lambda: anyio.sleep(1.0))
    assert again.delivered == []


async def test_a_source_yields_to_the_workers_less_often_while_no_call_is_in_flight(
    tmp_path: Path,
) -> None:
    """In-process calls run to the end at once, so while none is in flight a turn of the
    loop only costs: the source goes on for SUBMITS_PER_YIELD_IDLE events.  A call that
    waits for an answer needs the loop to turn: then it yields every SUBMITS_PER_YIELD."""
    from ccbus.delivery.dispatcher import SUBMITS_PER_YIELD, SUBMITS_PER_YIELD_IDLE

    assert SUBMITS_PER_YIELD_IDLE > SUBMITS_PER_YIELD
    flaky = Flaky()
    flaky.hang.add("h")
    config = CONFIG.replace("flaky: {concurrency: 1}", "flaky: {concurrency: 1, timeout: 1}")
    bus = make_bus(tmp_path, flaky, config + "  outbox: false\n")

    async def publish_and_watch(count: int, lane: str) -> list[int]:
        before, seen = len(flaky.delivered), []
        for n in range(count):
            await bus.publish(go(lane=lane, value=f"{lane}{n}"))
            seen.append(len(flaky.delivered) - before)
        return seen

    async def body() -> None:
        seen = await publish_and_watch(SUBMITS_PER_YIELD_IDLE, "a")
        assert seen == [0] * (SUBMITS_PER_YIELD_IDLE - 1) + [SUBMITS_PER_YIELD_IDLE]
        await bus.publish(go(lane="h"))  # hangs: in flight from now on
        await wait_for(lambda: bus.dispatcher._running_ids)
        seen = await publish_and_watch(SUBMITS_PER_YIELD, "b")
        assert seen[-1] > 0  # the workers ran within SUBMITS_PER_YIELD events

    await running(bus, body)


class Gated:
    """Action `gated`: each call waits until the test opens the gate; notes how many
    calls of its lane were inside at once."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.inside = 0
        self.peak = 0
        self.done: list[str] = []

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        gated = self

        class Params(Options):
            value: str = ""

        async def run(params: Params, ctx: Any) -> None:
            gated.inside += 1
            gated.peak = max(gated.peak, gated.inside)
            try:
                await gated.gate.wait()
            finally:
                gated.inside -= 1
            gated.done.append(params.value)

        return [ActionSpec(name="gated", params=Params, run=run, shorthand="value")]


def gated_bus(tmp_path: Path, gated: Gated, *, outbox_on: bool = True) -> Bus:
    """A bus whose rule calls ``gated`` for every ``t.go``, three calls at a time."""
    write(tmp_path / "rules" / "r.yaml",
          "rules:\n  - name: go\n    on: t.go\n    do: [gated: \"{value}\"]\n")
    config = (
        "http: {enabled: false}\nstate_dir: state\nrules: [rules]\n"
        f"delivery:\n  outbox: {str(outbox_on).lower()}\n"
        "  actions:\n    gated: {concurrency: 3, timeout: 30}\n"
    )
    return Bus(load_config(write(tmp_path / "ccbus.yaml", config)),
               PluginHost(autoload=False, extra=[gated]))


@pytest.mark.parametrize("outbox_on", [True, False], ids=["outbox", "memory"])
async def test_a_burst_runs_as_many_calls_at_once_as_the_lane_allows_and_no_more(
    tmp_path: Path, outbox_on: bool
) -> None:
    """Nine calls published at once to one lane with ``concurrency: 3``: three wait for
    their target at the same time (not one, not nine), and the rest follow as they end."""
    gated = Gated()
    bus = gated_bus(tmp_path, gated, outbox_on=outbox_on)

    async def body() -> None:
        for n in range(9):
            await bus.publish(go(value=f"v{n}"))
        await wait_for(lambda: gated.inside == 3)
        await anyio.sleep(0.3)  # time for a fourth to start, were it allowed to
        assert (gated.inside, gated.peak) == (3, 3)
        gated.gate.set()
        await wait_for(lambda: len(gated.done) == 9)

    await running(bus, body)
    assert sorted(gated.done) == [f"v{n}" for n in range(9)]
    assert gated.peak == 3


async def test_stopping_waits_for_the_call_in_flight_and_no_longer(tmp_path: Path) -> None:
    """``bus.stop()`` while a call waits for its target: the bus stops once that call
    ends (here 0.3 s later), not at the drain timeout, and the call is not run again."""
    gated = Gated()
    bus = gated_bus(tmp_path, gated)

    async def open_gate_soon() -> None:
        await anyio.sleep(0.3)
        gated.gate.set()

    with anyio.fail_after(5):  # the drain timeout is 10 s: waiting that long fails here
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: bus.run(watch_rules=False))
            await bus.started.wait()
            await bus.publish(go(value="in flight"))
            await wait_for(lambda: gated.inside == 1)
            bus.stop()
            tg.start_soon(open_gate_soon)
            await anyio.sleep(0.1)
            assert gated.done == []  # stopping, and waiting for the call
    assert gated.done == ["in flight"]
    assert outbox(tmp_path).pending_count() == 0


async def test_dead_letters_cli_shows_what_it_stored_even_a_lone_surrogate(tmp_path: Path) -> None:
    """No command may crash on what ccbus stored itself: text that cannot be written as
    UTF-8 (a lone surrogate, stored before the JSON edge refused them) is shown escaped."""
    flaky = Flaky()
    flaky.fail_next["p"] = [PermanentActionError("bad request")]
    bus = make_bus(tmp_path, flaky)
    store = outbox(tmp_path)
    runner = CliRunner()
    state = str(tmp_path / "state")

    def cli_run(*args: str) -> str:
        result = runner.invoke(cli, [*args, "--state-dir", state],
                               obj={"plugins": PluginHost(autoload=False)})
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    async def body() -> None:
        event = go(lane="p")
        event.data["caller"] = "caller \ud800"  # the event is stored JSON-escaped
        await bus.publish(event)
        await wait_for(lambda: store.dead_count() == 1)

    await running(bus, body)
    assert "1 dead letter(s)" in cli_run("dead-letters", "list")
    shown = cli_run("dead-letters", "show", str(store.dead_letters()[0].id))
    assert "caller \\ud800" in shown


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_due_leaves_out_skipped_ids_and_full_lanes(tmp_path: Path, kind: str) -> None:
    from ccbus.delivery.store import MemoryDeliveryStore

    store: Any = outbox(tmp_path) if kind == "sqlite" else MemoryDeliveryStore()
    rows = [Pending(key=f"k{i}", rule="r", action="a", index=0, lane="dead" if i % 2 else "live",
                    params="{}", event="{}", created=0.0, next_at=float(i)) for i in range(10)]
    ids = store.add(rows)
    due = store.due(100.0, 3, {ids[0]}, frozenset({"dead"}))
    assert [r.key for r in due] == ["k2", "k4", "k6"]  # soonest first, skip and lane left out
    assert [r.key for r in store.due(100.0, 20, set())] == [f"k{i}" for i in range(10)]
