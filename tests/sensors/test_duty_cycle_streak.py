"""A duty-cycled loop (80 ms on / 20 ms off, or short select() sleeps between batches)
keeps its busy streak (``burn.advance_streak``): the streak is judged on a smoothed
runnable share, so a short sleep inside a sampling interval never resets it, while a
watcher that wakes briefly now and then never starts one. Sans-I/O."""

from __future__ import annotations

from itertools import pairwise

from bastion.sensors.burn import Streak, advance_streak

ON = 0.5  # rules.detectors.background_busy_share


def _run(pattern: list[float], dt: float = 0.1, rounds: int = 40) -> list[Streak]:
    """Streaks after each sample of a process runnable ``pattern[i % len]`` of each."""
    streak, out = Streak(), []
    for i in range(rounds):
        share = pattern[i % len(pattern)]
        streak = advance_streak(streak, ran=share * dt, waited=0.0, dt=dt, on=ON)
        out.append(streak)
    return out


def test_an_80_20_duty_cycle_keeps_adding_up() -> None:
    streaks = _run([0.8])
    assert all(b.cpu > a.cpu for a, b in pairwise(streaks[10:]))
    assert streaks[-1].runnable > 2.0


def test_short_sleeps_landing_on_a_sample_do_not_reset_the_streak() -> None:
    # a sample that fell mostly into a select() sleep (10% runnable) between busy ones
    streaks = _run([1.0, 1.0, 1.0, 0.1])
    assert all(s.cpu > 0 for s in streaks[10:])  # once started (smoothed over 1 s)
    assert streaks[-1].cpu > 2.0


def test_a_watcher_that_wakes_briefly_never_starts_a_streak() -> None:
    assert all(s.cpu == 0 for s in _run([0.05, 0.0, 0.3, 0.0]))
