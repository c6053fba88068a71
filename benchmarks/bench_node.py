"""Rollout scale through the node daemon: N concurrent honest episodes driven from one
asyncio trainer process, against plain asyncio subprocesses at the same N.

Each episode is 10 honest SWE-style calls (write a file, run python on it, grep, a small
pytest-less test loop, ls, ...). Measured in one run per N:

* steps/s: tool calls completed per second across all episodes, bastion vs plain
  ``asyncio.create_subprocess_exec(bash -c ...)`` with the same commands;
* reset: the time to open a session (``await client.session(...)``), p50/p99;
* trainer loop lag: a ticker task in the trainer measures how late a 10 ms sleep wakes,
  p99/max, for bastion and for plain;
* CPU: seconds used by the trainer process and by the daemon (bastion's own work);
* verdicts on honest work (must be 0).

Usage: python benchmarks/bench_node.py [--n 8 32 64] (needs root; starts its own node)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_state_dir, emit, pct, start_node

CALLS = [
    "mkdir -p pkg && printf 'def add(a, b):\\n    return a + b\\n' > pkg/calc.py",
    "python3 -c 'import sys; sys.path.insert(0, \"pkg\"); import calc; print(calc.add(2, 3))'",
    "ls -la pkg",
    "grep -n 'def ' pkg/calc.py",
    "for i in $(seq 1 20); do echo line $i; done > out.txt && wc -l out.txt",
    "python3 -c 'print(sum(range(100000)))'",
    "cat pkg/calc.py | head -n 5",
    "sed -i 's/a + b/b + a/' pkg/calc.py && cat pkg/calc.py",
    "find . -name '*.py' | sort",
    "echo done && true",
]


class LagProbe:
    """How late the trainer's event loop wakes from a 10 ms sleep."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lags.append(time.perf_counter() - t0 - 0.01)

    def __enter__(self) -> LagProbe:  # noqa: PYI034
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def bastion_round(n: int, client: object, run: str) -> dict[str, float]:
    resets: list[float] = []
    verdicts = 0

    async def episode(i: int) -> None:
        nonlocal verdicts
        t0 = time.perf_counter()
        async with await client.session(run_id=run, episode_id=f"ep{i}") as s:  # type: ignore[attr-defined]
            resets.append(time.perf_counter() - t0)
            for step, cmd in enumerate(CALLS):
                r = await s.exec(cmd, step=step, timeout=60)
                verdicts += len(r.verdicts)

    with LagProbe() as lag:
        t0 = time.perf_counter()
        await asyncio.gather(*(episode(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return {"steps_s": n * len(CALLS) / wall, "reset_p50_s": statistics.median(resets),
            "reset_p99_s": pct(resets, 99), "lag_p99_ms": pct(lag.lags, 99) * 1000,
            "lag_max_ms": max(lag.lags) * 1000, "verdicts": verdicts, "wall_s": wall}


async def plain_round(n: int, root: Path) -> dict[str, float]:
    async def episode(i: int) -> None:
        cwd = root / f"ep{i}"
        cwd.mkdir(parents=True, exist_ok=True)
        for cmd in CALLS:
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", cmd, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            await proc.communicate()

    with LagProbe() as lag:
        t0 = time.perf_counter()
        await asyncio.gather(*(episode(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return {"steps_s": n * len(CALLS) / wall, "lag_p99_ms": pct(lag.lags, 99) * 1000,
            "lag_max_ms": max(lag.lags) * 1000, "wall_s": wall}


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[8, 32, 64])
    args = ap.parse_args()
    state = bench_state_dir()
    node = start_node(state, "--max-sessions", str(max(args.n) + 8))
    results: dict[str, dict[str, object]] = {}
    try:
        from bastion.daemon import AsyncNodeClient

        client = AsyncNodeClient.for_state_dir(state)
        print(f"{'N':>4} {'bastion steps/s':>16} {'plain steps/s':>14} {'ratio':>6} "
              f"{'reset p50/p99 s':>16} {'lag p99/max ms (bastion | plain)':>34} "
              f"{'CPU s trainer/node':>19} {'verdicts':>8}")
        for n in args.n:
            self_cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            node_cpu0 = _cpu_of(node.pid)
            b = asyncio.run(bastion_round(n, client, f"bench-node-{n}"))
            self_cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            node_cpu = _cpu_of(node.pid) - node_cpu0
            trainer_cpu = ((self_cpu1.ru_utime + self_cpu1.ru_stime)
                           - (self_cpu0.ru_utime + self_cpu0.ru_stime))
            root = state / f"plain-{n}"
            p = asyncio.run(plain_round(n, root))
            shutil.rmtree(root, ignore_errors=True)
            ratio = b["steps_s"] / p["steps_s"]
            print(f"{n:>4} {b['steps_s']:>16.1f} {p['steps_s']:>14.1f} {ratio:>6.2f} "
                  f"{b['reset_p50_s']:>7.2f}/{b['reset_p99_s']:<8.2f} "
                  f"{b['lag_p99_ms']:>8.1f}/{b['lag_max_ms']:<7.1f} | "
                  f"{p['lag_p99_ms']:>6.1f}/{p['lag_max_ms']:<7.1f} "
                  f"{trainer_cpu:>9.1f}/{node_cpu:<9.1f} {b['verdicts']:>8}", flush=True)
            results[str(n)] = {"bastion": b, "plain": p, "ratio": round(ratio, 3),
                               "trainer_cpu_s": round(trainer_cpu, 2),
                               "node_cpu_s": round(node_cpu, 2)}
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=120)
        shutil.rmtree(state, ignore_errors=True)
    emit("node", results)


if __name__ == "__main__":
    main()
