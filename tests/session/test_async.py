"""``AsyncSession``: ``await session.exec`` in real sessions, on one event loop.

Each test runs its own loop (``asyncio.run``). What is checked is behaviour: the
call's processes are gone after a cancellation (the call cgroup is empty) and the
durable audit trail says why; a timeout kills the process and its children; verdicts
reach the awaiting caller; the loop keeps running other tasks while calls run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bastion import AsyncSession, Outcome, Session, Severity
from bastion.audit.reader import open_logs
from bastion.events import Action

pytestmark = pytest.mark.needs_root

T = TypeVar("T")


def run(state_dir: Path, body: Callable[[Callable[..., Awaitable[AsyncSession]]], Awaitable[T]],
        ) -> T:
    """Run ``body(make)`` on a fresh loop; every session it makes is closed after."""
    async def main() -> T:
        made: list[AsyncSession] = []

        async def make(**kwargs: Any) -> AsyncSession:
            kwargs.setdefault("state_dir", state_dir)
            s = await AsyncSession.create(**kwargs)
            made.append(s)
            return s

        try:
            return await body(make)
        finally:
            await asyncio.gather(*(s.close() for s in made))

    return asyncio.run(main())


async def await_true(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """``wait_for`` for a loop: poll without blocking it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return bool(predicate())


def call_end(state_dir: Path, episode_id: str, call_id: str) -> dict[str, Any]:
    """The call's ``call_end`` record as the durable trail has it."""
    for log in open_logs(state_dir):
        with log:
            for record in log.episode(episode_id):
                fields = record.data.get("fields", {})
                if (record.type == "lifecycle" and record.call_id == call_id
                        and fields.get("life.state") == "call_end"):
                    return dict(fields)
    raise AssertionError(f"no call_end for {call_id} in the trail")


def test_exec_write_and_read_give_what_the_blocking_api_gives(state_dir: Path) -> None:
    async def body(make: Callable[..., Awaitable[AsyncSession]]) -> None:
        s = await make(run_id="r-async", episode_id="e-async")
        r = await s.exec("echo out; echo err >&2; exit 3", step=0)
        assert (r.stdout, r.stderr, r.exit_code, r.outcome) == ("out\n", "err\n", 3,
                                                                 Outcome.EXIT_NONZERO)
        assert (r.step, r.call_id) == (0, "c0")
        r = await s.exec(["cat"], stdin=b"x" * 300_000, env={"A": "1"})
        assert len(r.stdout) == 300_000 and r.ok  # more than a pipe buffer each way
        r = await s.exec("echo $A; pwd", env={"A": "v"}, cwd="/tmp")
        assert r.stdout == "v\n/tmp\n"
        assert (await s.write_file("notes/a.txt", "hello\n")).ok
        assert (await s.write_file("/proc/nope", "x")).exit_code != 0
        assert (await s.read_file("notes/a.txt")).stdout == "hello\n"
        # the same session object underneath, attributed the same way
        events = [e for e in s.session.events if e.kind.value == "command"]
        assert [e.call_id for e in events] == ["c0", "c1", "c2", "c3", "c4", "c5"]
        assert all(e.run_id == "r-async" and e.episode_id == "e-async" for e in events)

    run(state_dir, body)


def test_cancelling_an_awaited_exec_kills_the_call_and_records_it(state_dir: Path) -> None:
    async def body(make: Callable[..., Awaitable[AsyncSession]]) -> None:
        s = await make(episode_id="e-cancel")
        # a foreground process and a background one that would outlive the call
        task = asyncio.create_task(s.exec("sleep 300 & setsid sleep 301 & sleep 302",
                                          call_id="long"))
        assert await await_true(lambda: s.session.live_calls().get("long", 0) >= 3)
        cgroup = s.session._calls["long"].cgroup
        assert cgroup is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # every process of the call is gone, the detached one too
        assert await await_true(lambda: "long" not in s.session.live_calls())
        procs = cgroup / "cgroup.procs"
        assert not procs.exists() or procs.read_text().split() == []
        # and the session works on
        assert (await s.exec("echo next")).stdout == "next\n"

    run(state_dir, body)
    end = call_end(state_dir, "e-cancel", "long")
    assert end["outcome"] == "killed" and end["reason"] == "cancelled by the caller"


def test_a_call_cancelled_before_it_runs_never_runs(state_dir: Path) -> None:
    async def body(make: Callable[..., Awaitable[AsyncSession]]) -> None:
        s = await make(episode_id="e-early")
        task = asyncio.create_task(s.exec("touch ran", call_id="early"))
        await asyncio.sleep(0)  # it starts, and waits for its command's analysis
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await s.exec("ls")).stdout == ""  # nothing was created
        assert not s.session.live_calls()

    run(state_dir, body)
    end = call_end(state_dir, "e-early", "early")
    assert end["outcome"] == "killed" and end["reason"] == "cancelled by the caller"


def test_cancelling_again_while_the_call_is_cleaned_up_still_kills_and_records_it(
        state_dir: Path) -> None:
    """A trainer may cancel a task more than once (a timeout, then its own shutdown):
    cancels that land while the steps kill and record the call must not cut that short
    or leave the driver spinning on a cancelled wait."""
    async def body(make: Callable[..., Awaitable[AsyncSession]]) -> None:
        s = await make(episode_id="e-twice")
        task = asyncio.create_task(s.exec("sleep 300 & sleep 301", call_id="twice"))
        assert await await_true(lambda: s.session.live_calls().get("twice", 0) >= 2)
        cancels = 0
        while not task.done():  # cancel at every turn of the loop until it ends
            task.cancel()
            cancels += 1
            await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cancels >= 2  # the first cancel did not end the task on its own turn
        assert await await_true(lambda: "twice" not in s.session.live_calls())
        assert (await s.exec("echo next")).stdout == "next\n"

    run(state_dir, body)
    end = call_end(state_dir, "e-twice", "twice")
    assert end["outcome"] == "killed" and end["reason"] == "cancelled by the caller"


def test_asyncio_timeout_cancels_the_call(state_dir: Path) -> None:
    async def body(make: Callable[..., Awaitable[AsyncSession]]) -> None:
        s = await make()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await s.exec("sleep 300", call_id="t")
        assert await await_true(lambda: "t" not in s.session.live_calls())

    run(state_dir, body)


def test_a_call_timeout_kills_the_process_and_its_children(state_dir: Path) -> None:
    async def body(make: Callable[..., Awaitable[AsyncSession]]) -> None:
        s = await make()
        r = await s.exec("sleep 300 & sleep 301 & sleep 302", timeout=1, call_id="slow")
        assert r.outcome is Outcome.TIMEOUT and r.timed_out and r.exit_code == 137
        assert await await_true(lambda: "slow" not in s.session.live_calls())
        assert (await s.exec("pgrep -c sleep || true")).stdout.strip() == "0"

    run(state_dir, body)


def test_a_verdict_reaches_the_awaiting_caller(state_dir: Path) -> None:
    async def body(make: Callable[..., Awaitable[AsyncSession]]) -> None:
        s = await make()
        # refused before it runs (the command is judged)...
        r = await s.exec("cat $(echo wodahs/cte/ | rev)", call_id="pre")
        assert r.outcome is Outcome.DENIED
        assert r.verdicts and all(v.call_id == "pre" for v in r.verdicts)
        # ...and killed while it runs: what it executes is only seen at run time. The
        # `cat` is refused and gone in a millisecond: it is judged by the argv the exec
        # listener read while its exec waited, however late the sensor reads /proc
        # (computed: a letter shift the analyser cannot fold, unlike a reversal)
        spell = "''.join(chr(ord(c) - 1) for c in 'dbu!0fud0tibepx<!tmffq!411')"
        r = await s.exec(f"python3 -c \"import os; os.system({spell})\"; sleep 300",
                         call_id="live", timeout=120)
        assert r.outcome is Outcome.KILLED and r.duration < 60
        killing = [v for v in r.verdicts if v.action is Action.KILL]
        assert killing and killing[0].call_id == "live"
        assert killing[0].rule_id.startswith("credentials.")

    run(state_dir, body)


def test_the_loop_keeps_running_while_a_call_runs(state_dir: Path) -> None:
    """A ticker task on the same loop ticks through a 2 s call; a blocking
    ``Session.exec`` on the loop thread would hold every tick until it returned."""
    async def body(make: Callable[..., Awaitable[AsyncSession]]) -> None:
        s = await make()
        ticks: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        started = time.monotonic()
        r = await s.exec("sleep 2")
        ended = time.monotonic()
        stop.set()
        await t
        assert r.ok
        during = [x for x in ticks if started < x < ended]
        assert len(during) >= 20, f"only {len(during)} ticks during a {ended - started:.1f}s call"
        # ticks spread over the whole call, not bunched at one end
        assert during[0] - started < 1.0 and ended - during[-1] < 1.0

    run(state_dir, body)


def test_64_concurrent_calls_on_one_loop(state_dir: Path) -> None:
    n = 64

    async def body(make: Callable[..., Awaitable[AsyncSession]]) -> None:
        sessions = await asyncio.gather(*(make(episode_id=f"e{i}") for i in range(n)))

        async def episode(i: int, s: AsyncSession) -> list[str]:
            out = []
            for step in range(3):
                r = await s.exec(f"echo {i}-{step}; sleep 0.2", step=step)
                assert r.ok, (r.outcome, r.stderr)
                out.append(r.stdout)
            return out

        outs = await asyncio.gather(*(episode(i, s) for i, s in enumerate(sessions)))
        assert outs == [[f"{i}-{step}\n" for step in range(3)] for i in range(n)]
        # honest work: nothing acted on, nothing that costs a penalty (a loaded host
        # may add low-severity notes that the process sensor ran late)
        assert all(v.action is Action.NONE and v.severity < Severity.MEDIUM
                   for s in sessions for v in s.verdicts), [
            (v.rule_id, v.severity, v.action) for s in sessions for v in s.verdicts]

    run(state_dir, body)


def test_wrap_and_blocking_calls_share_one_session(make_session: Callable[..., Session]) -> None:
    """``AsyncSession.wrap`` drives an existing session; a blocking call made from
    another thread while an async one runs waits its turn (one call at a time)."""
    s = make_session()

    async def body() -> tuple[str, str]:
        a = AsyncSession.wrap(s)
        slow = asyncio.create_task(a.exec("sleep 0.5; echo async"))
        await asyncio.sleep(0.1)
        blocking = asyncio.get_running_loop().run_in_executor(None, s.exec, "echo sync")
        r1, r2 = await asyncio.gather(slow, blocking)
        return r1.stdout, r2.stdout

    assert asyncio.run(body()) == ("async\n", "sync\n")
    assert not s.closed


def test_no_thread_per_call(state_dir: Path) -> None:
    """Calls in flight add no threads: each session brings its own pipeline thread
    (as the blocking API does), a call none."""
    import threading

    async def body(make: Callable[..., Awaitable[AsyncSession]]) -> tuple[int, int]:
        sessions = [await make() for _ in range(4)]
        await asyncio.gather(*(s.exec("true") for s in sessions))  # pools warmed
        before = threading.active_count()
        tasks = [asyncio.create_task(s.exec("sleep 30")) for s in sessions]
        # counted while every call is in flight (not after a fixed delay: a slow host
        # may not have started them yet, a fast one may have finished them)
        assert await await_true(lambda: all(s.session.live_calls() for s in sessions),
                                timeout=60)
        during = threading.active_count()
        for task in tasks:
            task.cancel()  # (a cancelled call is killed in its sandbox)
        await asyncio.gather(*tasks, return_exceptions=True)
        return before, during

    before, during = run(state_dir, body)
    assert during <= before, (before, during)
