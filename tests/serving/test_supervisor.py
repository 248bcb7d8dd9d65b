"""The restart policy of ``aptrank serve``'s workers (serving.supervisor): immediate after a stable
life, then 1, 2, 4, ... s for deaths soon after a respawn, capped, per worker, and reset by a
stable life. The real server under repeated SIGKILLs: tests/serving/online/test_server_lifecycle.py."""

from __future__ import annotations

from aptrank.serving.supervisor import RestartBackoff


def test_backoff_doubles_for_quick_deaths_is_capped_and_resets_after_a_stable_life() -> None:
    policy = RestartBackoff(first_delay_s=1.0, max_delay_s=5.0, stable_after_s=30.0)
    policy.born(0, 0.0)
    policy.born(1, 0.0)
    assert policy.delay(0, 100.0) == 0.0  # lived 100 s: respawned at once
    delays, now = [], 100.0
    for _ in range(5):
        policy.born(0, now)
        now += 2.0  # dies 2 s after each respawn
        delays.append(policy.delay(0, now))
        now += delays[-1]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.delay(1, 3.0) == 1.0  # another worker keeps its own count
    policy.born(0, now)
    assert policy.delay(0, now + 31.0) == 0.0  # a stable life again: the streak is over
    policy.born(0, now + 31.0)
    assert policy.delay(0, now + 32.0) == 1.0
