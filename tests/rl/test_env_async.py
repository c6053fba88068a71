"""``BastionEnv.areset`` / ``astep``: the same transitions as ``reset`` / ``step``.

Infos hold deterministic data only, so an episode played with the blocking API and
the same episode played on an event loop must give identical (observation, reward,
terminated, truncated, info) tuples, verdicts included.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from bastion import Policy
from bastion.rl import BastionEnv
from bastion.rl.tasks import FIXED_CALC

pytestmark = pytest.mark.needs_root

SOLVE = [
    "cat calc.py",
    json.dumps({"tool": "read_file", "path": "tests/test_calc.py"}),
    json.dumps({"tool": "write_file", "path": "calc.py", "content": FIXED_CALC}),
    "python3 tests/test_calc.py",
    json.dumps({"tool": "submit"}),
]
# refused before it runs (a secret read), then honest work; not ended by the policy
VIOLATE = ["cat /etc/shadow", "ls", json.dumps({"tool": "submit"})]


def _env(state_dir: Path, name: str = "t") -> BastionEnv:
    return BastionEnv(Policy.default(), run_id="run-async", name=name, max_steps=8,
                      state_dir=state_dir, exec_timeout=30)


def _play(env: BastionEnv, actions: list[str], seed: int) -> list[Any]:
    out: list[Any] = [env.reset(seed=seed)]
    for action in actions:
        transition = env.step(action)
        out.append(transition)
        if transition[2] or transition[3]:
            break
    return out


async def _aplay(env: BastionEnv, actions: list[str], seed: int) -> list[Any]:
    out: list[Any] = [await env.areset(seed=seed)]
    for action in actions:
        transition = await env.astep(action)
        out.append(transition)
        if transition[2] or transition[3]:
            break
    return out


@pytest.mark.parametrize("actions", [SOLVE, VIOLATE], ids=["solve", "violate"])
def test_astep_gives_the_transitions_step_gives(state_dir: Path, actions: list[str]) -> None:
    env = _env(state_dir / "sync")
    try:
        expected = _play(env, actions, seed=7)
    finally:
        env.close()

    async def main() -> list[Any]:
        aenv = _env(state_dir / "async")
        try:
            return await _aplay(aenv, actions, seed=7)
        finally:
            await aenv.aclose()

    got = asyncio.run(main())
    assert got == expected
    last = got[-1]
    if actions is SOLVE:
        assert last[1] == 1.0 and last[2] and not last[4]["bastion"]["verdicts"]
    else:
        first_step = got[1][4]["bastion"]
        assert first_step["outcome"] == "denied" and first_step["verdicts"]
        assert first_step["penalty"] < 0


def test_concurrent_episodes_on_one_loop(state_dir: Path) -> None:
    """Eight environments, one loop: every episode solved, none penalised, and the
    loop free between the calls (a ticker keeps ticking)."""
    n = 8

    async def main() -> tuple[list[list[Any]], int, float]:
        envs = [_env(state_dir, name=f"e{i}") for i in range(n)]
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        started = time.monotonic()
        try:
            runs = await asyncio.gather(*(_aplay(e, SOLVE, seed=i) for i, e in enumerate(envs)))
        finally:
            stop.set()
            await t
            await asyncio.gather(*(e.aclose() for e in envs))
        return runs, ticks, time.monotonic() - started

    runs, ticks, wall = asyncio.run(main())
    for i, run in enumerate(runs):
        info = run[0][1]
        assert info["bastion"]["attribution"]["episode_id"] == f"e{i}-s{i}"
        final = run[-1]
        assert final[1] == 1.0 and final[2], final
        assert all(not step[4]["bastion"]["verdicts"] for step in run[1:])
    # the loop ran other work throughout: at least one tick per 0.1 s of the run
    assert ticks >= wall * 10, (ticks, wall)


def test_cancelled_astep_kills_the_call_and_ends_the_episode(state_dir: Path) -> None:
    async def main() -> None:
        env = _env(state_dir)
        try:
            await env.areset(seed=1)
            session = env.session
            assert session is not None
            task = asyncio.create_task(env.astep("sleep 300"))
            deadline = time.monotonic() + 10
            while "c0" not in session.live_calls() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert "c0" in session.live_calls()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            deadline = time.monotonic() + 10
            while session.live_calls() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert not session.live_calls()
            with pytest.raises(RuntimeError, match="reset"):
                await env.astep("ls")
            await env.areset(seed=2)  # a new episode starts cleanly
            assert (await env.astep("echo ok"))[0].startswith("ok")
        finally:
            await env.aclose()

    asyncio.run(main())
