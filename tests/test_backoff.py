"""The one reconnect policy: growth to a cap, full jitter, and a fresh start after stability."""

from __future__ import annotations

from ccbus.sources.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delays_grow_to_the_cap_with_jitter_and_reset_after_a_stable_run() -> None:
    clock = Clock()
    backoff = Backoff(initial=1.0, cap=8.0, stable_after=60.0, clock=clock)
    ceilings = []
    for _ in range(6):  # quick failures: each run lasts a second
        backoff.started()
        clock.now += 1.0
        delay = backoff.next_delay()
        ceiling = min(8.0, 2.0 ** (backoff.attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]

    backoff.started()
    clock.now += 59.0  # not yet stable: keeps backing off at the cap
    assert 4.0 <= backoff.next_delay() <= 8.0

    backoff.started()
    clock.now += 60.0  # a stable connection, then a failure: start over
    assert 0.5 <= backoff.next_delay() <= 1.0
    assert backoff.attempt == 1


def test_a_failure_before_any_connection_backs_off_normally() -> None:
    backoff = Backoff(initial=2.0, cap=4.0, clock=Clock())
    assert 1.0 <= backoff.next_delay() <= 2.0
    assert 2.0 <= backoff.next_delay() <= 4.0
