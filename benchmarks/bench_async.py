"""Rollouts from one asyncio process: ``AsyncSession`` against plain subprocesses.

N honest 10-call SWE-style episodes run at once from one event loop, in three ways:

- ``plain``: ``asyncio.create_subprocess_exec("bash", "-c", cmd)`` in a temporary
  directory per episode (the baseline: no sandbox, no monitoring);
- ``async``: ``AsyncSession`` (``await session.exec``), bastion's default policy and
  engine, the whole pipeline and audit trail;
- ``to_thread``: the blocking ``Session.exec`` through ``asyncio.to_thread`` (what a
  trainer does without an async API), for N <= 64.

Each run has three phases, each a burst of N at once: reset (create the session /
the directory and the task files), the 10 calls of every episode, close. Reported
per mode and N: calls/s during the call phase and its ratio to ``plain``, reset
p50/p99 under the burst, the event loop's lag (a 10 ms ticker's lateness, p99 and
max over the whole run), the process's own CPU seconds (all its threads: bastion's
Python work in the trainer's process; the commands themselves run in other
processes), and honest episodes that got any verdict (must be 0).

    .venv/bin/python benchmarks/bench_async.py [--n 8 32 64 [256]] [--no-thread]
    .venv/bin/python benchmarks/bench_async.py --trail 2000   # the trail's commits alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import bench_state_dir, emit, pct

from bastion import AsyncSession, Session

FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": ("import sys\nsys.path.insert(0, '.')\nfrom calc import add\n"
                           "assert add(2, 3) == 5\nprint('PASS')\n"),
    "README.md": "calc: a tiny calculator\n",
}
# An honest episode: look around, read, edit, run, check (no network, no secrets).
CALLS = [
    "ls -la",
    "cat calc.py",
    "grep -rn 'def ' --include=*.py .",
    "sed -i 's/a - b/a + b/' calc.py",
    "python3 tests/test_calc.py",
    "mkdir -p pkg && printf 'X = 1\\n' > pkg/mod.py && ls pkg",
    "python3 -c 'import pkg.mod; print(pkg.mod.X)'",
    "find . -name '*.py' | sort | head -n 20",
    "wc -l calc.py README.md",
    "head -n 2 calc.py && echo done",
]


# the sandbox's environment (session.py), so both run the same binaries
PLAIN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "LANG": "C.UTF-8", "TERM": "dumb"}


class LagProbe:
    """A ticker on the loop: how late each 10 ms sleep wakes up is the loop's lag."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.lags: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(self.period)
            self.lags.append(max(0.0, time.monotonic() - t - self.period))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


class Plain:
    """The baseline episode: a directory and bash, nothing watched."""

    def __init__(self) -> None:
        self.dir: Path | None = None

    async def reset(self) -> None:
        await asyncio.to_thread(self._make)  # file writes off the loop, as bastion's are

    def _make(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bastion-bench-plain-"))
        for name, text in FILES.items():
            (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
            (self.dir / name).write_text(text)

    async def call(self, cmd: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", cmd, cwd=self.dir, env={**PLAIN_ENV, "HOME": str(self.dir)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    async def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def verdicts(self) -> list[Any]:
        return []


def _prepare(workspace: Path, uid: int) -> None:
    for name, text in FILES.items():
        target = workspace / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        os.chown(target.parent, uid, uid)
        os.chown(target, uid, uid)


class Async:
    """An episode through ``AsyncSession``."""

    def __init__(self, state_dir: Path, index: int) -> None:
        self.s = AsyncSession(state_dir=state_dir, run_id="bench-async",
                              episode_id=f"async-{index}", prepare=_prepare)

    async def reset(self) -> None:
        await self.s.start()

    async def call(self, cmd: str) -> tuple[int, str]:
        r = await self.s.exec(cmd)
        return r.exit_code, r.stdout

    async def close(self) -> None:
        await self.s.close()

    def verdicts(self) -> list[Any]:
        return list(self.s.verdicts) if self.s._session is not None else []


class Threaded:
    """An episode through the blocking ``Session``, one ``to_thread`` per call."""

    def __init__(self, state_dir: Path, index: int) -> None:
        self.state_dir, self.index = state_dir, index
        self.s: Session | None = None

    async def reset(self) -> None:
        self.s = await asyncio.to_thread(
            Session, state_dir=self.state_dir, run_id="bench-thread",
            episode_id=f"thread-{self.index}", prepare=_prepare)

    async def call(self, cmd: str) -> tuple[int, str]:
        assert self.s is not None
        r = await asyncio.to_thread(self.s.exec, cmd)
        return r.exit_code, r.stdout

    async def close(self) -> None:
        if self.s is not None:
            await asyncio.to_thread(self.s.close)

    def verdicts(self) -> list[Any]:
        return list(self.s.verdicts) if self.s is not None else []


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    t = time.monotonic()
    await fn()
    return time.monotonic() - t


async def run_mode(make: Callable[[int], Any], n: int) -> dict[str, Any]:
    probe = LagProbe()
    probe.start()
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    episodes = [make(i) for i in range(n)]
    lost: list[str] = []  # episodes whose session failed (an error, not a result)

    async def reset(e: Any) -> float | None:
        t = time.monotonic()
        try:
            await e.reset()
        except Exception as exc:  # noqa: BLE001 - counted and reported
            lost.append(f"reset: {type(exc).__name__}: {exc}")
            return None
        return time.monotonic() - t

    resets = await asyncio.gather(*(reset(e) for e in episodes))
    live = [e for e, r in zip(episodes, resets, strict=True) if r is not None]
    failures = 0

    async def episode(e: Any) -> None:
        nonlocal failures
        try:
            for cmd in CALLS:
                code, _ = await e.call(cmd)
                failures += code != 0
        except Exception as exc:  # noqa: BLE001 - counted and reported
            lost.append(f"call: {type(exc).__name__}: {exc}")

    calls_from = len(probe.lags)
    t = time.monotonic()
    calls_cpu0 = time.process_time()
    await asyncio.gather(*(episode(e) for e in live))
    calls_wall = time.monotonic() - t
    calls_cpu = time.process_time() - calls_cpu0
    calls_lags = probe.lags[calls_from:] or [0.0]
    verdicts = [[v for v in e.verdicts()] for e in live]
    await asyncio.gather(*(e.close() for e in live), return_exceptions=True)
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    await probe.stop()
    lags = probe.lags or [0.0]
    times = [r for r in resets if r is not None] or [0.0]
    kinds: dict[str, int] = {}
    for found in verdicts:
        for v in found:
            key = f"{v.rule_id} ({v.severity}, {v.action.value})"
            kinds[key] = kinds.get(key, 0) + 1
    return {
        "n": n,
        "calls_per_s": round(len(live) * len(CALLS) / calls_wall, 2),
        "calls_wall_s": round(calls_wall, 3),
        "reset_p50_s": round(pct(times, 50), 3),
        "reset_p99_s": round(pct(times, 99), 3),
        "loop_lag_p99_ms": round(pct(lags, 99) * 1000, 1),
        "loop_lag_max_ms": round(max(lags) * 1000, 1),
        "loop_lag_calls_p99_ms": round(pct(calls_lags, 99) * 1000, 1),
        "loop_lag_calls_max_ms": round(max(calls_lags) * 1000, 1),
        "process_cpu_s": round(cpu, 2),
        # the trainer process's CPU (all threads) during the call phase, per call
        "calls_cpu_ms_per_call": round(1000 * calls_cpu / max(1, len(live) * len(CALLS)), 2),
        "wall_s": round(wall, 2),
        "failed_calls": failures,
        "episodes_lost": len(lost),
        "lost": sorted(set(lost))[:5],
        "episodes_with_verdicts": sum(bool(found) for found in verdicts),
        # the default policy's rl.penalty charges medium and above; any action counts
        "episodes_penalised": sum(any(v.action.value != "none" or v.severity >= 2
                                      for v in found) for found in verdicts),
        "verdicts": kinds,
    }


MODES: dict[str, Callable[[Path, int], Any]] = {
    "plain": lambda state, i: Plain(),
    "async": lambda state, i: Async(state, i),
    "to_thread": lambda state, i: Threaded(state, i),
}


def one(mode: str, n: int, state: Path) -> dict[str, Any]:
    """One mode at one N, in this (fresh) process."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 256 sessions hold many fds
    if mode != "plain":
        # one-time costs (imports, compiling the rule packs, the gateway) are paid
        # here, not by the first episodes
        with Session(state_dir=state, run_id="bench-warm") as warm:
            warm.exec("true")
    make = MODES[mode]
    return asyncio.run(run_mode(lambda i: make(state, i), n))


def trail_cost(records: int, rounds: int = 2) -> dict[str, Any]:
    """The audit trail as a session drives it, without sandboxes: records arriving
    0.5 ms apart from one thread, a flush every 10 (a call's command before it runs),
    with commits at once (linger 0, before stop 5) and lingering 50 ms (sessions'
    setting), alternating. CPU is the process's, all threads (the writer's commits)."""
    from bastion import Event, EventKind
    from bastion.audit import AuditTrail, TrailConfig

    out: dict[str, list[dict[str, float]]] = {"linger_0": [], "linger_50ms": []}
    for _ in range(rounds):
        for name, linger in (("linger_0", 0.0), ("linger_50ms", 0.05)):
            where = tempfile.mkdtemp(prefix="bastion-bench-trail-", dir="/var/tmp")
            trail = AuditTrail(where, "r", config=TrailConfig(durable_appends=False,
                                                              linger=linger))
            cpu, wall = time.process_time(), time.monotonic()
            for i in range(records):
                trail.append_event(Event(EventKind.EXEC, run_id="r", episode_id="e", step=i,
                                         pid=i, fields={"proc.name": "p"}))
                if i % 10 == 9:
                    trail.flush()
                time.sleep(0.0005)
            trail.flush()
            stats = trail.statistics()
            out[name].append({"cpu_s": round(time.process_time() - cpu, 3),
                              "wall_s": round(time.monotonic() - wall, 3),
                              "commits": stats.batches})
            trail.close()
            shutil.rmtree(where, ignore_errors=True)
    return {"records": records, "load_average": os.getloadavg()[0], **out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trail", type=int, metavar="RECORDS",
                        help="only the audit trail's commit cost, linger 0 vs 50 ms")
    parser.add_argument("--n", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--no-thread", action="store_true",
                        help="skip the to_thread comparison")
    parser.add_argument("--one", nargs=3, metavar=("MODE", "N", "STATE"),
                        help=argparse.SUPPRESS)  # a child run: one mode, one N
    args = parser.parse_args()
    if args.trail:
        print(json.dumps(trail_cost(args.trail), indent=2))
        return 0
    if args.one:
        mode, n, where = args.one
        print(json.dumps(one(mode, int(n), Path(where))))
        return 0
    # every mode runs in a fresh process: the baseline's trainer does not carry
    # bastion's threads, and each mode's CPU is its own
    state = bench_state_dir()
    results: dict[str, Any] = {"calls_per_episode": len(CALLS), "runs": []}
    try:
        for n in args.n:
            row: dict[str, Any] = {"n": n}
            modes = ["plain", "async"]
            if not args.no_thread and n <= 64:
                modes.append("to_thread")
            for mode in modes:
                done = subprocess.run([sys.executable, __file__, "--one", mode, str(n),
                                       str(state)], capture_output=True, text=True,
                                      check=False)
                if done.returncode != 0:
                    print(done.stderr[-4000:], file=sys.stderr)
                    row[mode] = {"error": done.stderr.strip().splitlines()[-1:]}
                    continue
                row[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            for mode in ("async", "to_thread"):
                if "calls_per_s" in row.get(mode, {}) and "calls_per_s" in row["plain"]:
                    row[f"{mode}_vs_plain_calls_per_s"] = round(
                        row[mode]["calls_per_s"] / row["plain"]["calls_per_s"], 3)
            results["runs"].append(row)
            a, p = row.get("async", {}), row["plain"]
            print(f"N={n}: plain {p.get('calls_per_s')}/s, async {a.get('calls_per_s')}/s "
                  f"({row.get('async_vs_plain_calls_per_s')}x), lag p99 "
                  f"{a.get('loop_lag_p99_ms')} ms (plain {p.get('loop_lag_p99_ms')} ms)",
                  flush=True)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    results["load_average"] = os.getloadavg()
    emit("async", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
