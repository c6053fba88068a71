"""RL throughput: episodes/s and p99 step latency, in-process vs on local Ray.

N episodes (half RoguePolicy, half OrdinaryPolicy, FixBugTask) run N at a time:
in-process with one thread per episode, and through ``bastion.cluster.ClusterRun`` on
a local Ray started with ``num_cpus`` CPUs. A step's latency is the wall time of one
``BastionEnv.step`` (one tool call: sandbox exec + verdicts + grading on submit),
measured by the agent wrapper inside whichever process runs the episode. Ray's start-up
is reported separately and excluded from episodes/s. Engine: ``Session``'s default,
or bastion's rule engine and responder if the default has none (printed).

    .venv/bin/python benchmarks/bench_rl.py [--episodes 4 16] [--rounds 2] [--num-cpus 2]

``--honest N [N ...]`` instead runs N *honest* episodes at once (in-process, default
policy and engine), each doing CPU-heavy agent work on top of the task (a
pure-Python loop of 2 CPU-seconds, two parallel 1 CPU-second jobs, a bash loop
writing 2,000 files, a background job that spans calls, the task's own tests), and
reports containing actions and RL penalties: the figure must be 0 at any N.

    .venv/bin/python benchmarks/bench_rl.py --honest 32 64

``--grading N`` measures what grading outside the agent's reach costs per episode
(``bastion.rl.grading``: stop the agent, copy the files under test, a fresh grader
session, the grader's command): N honest episodes one after another, each timing the
old way (the grader's command in the agent's own session, the baseline, measured in
the same episode just before submitting) and the submit step that grades for real.
The default run ends with ``--grading 8``.

    .venv/bin/python benchmarks/bench_rl.py --grading 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion import Policy
from bastion.rl import BastionEnv, OrdinaryPolicy, RoguePolicy, run_episode
from bastion.rl.rogue import ScriptedPolicy


@dataclass
class Timed:
    """Wraps a scripted agent; records the wall time of every env.step it waits on."""

    inner: Any
    name: str = ""
    steps: list[float] = field(default_factory=list)
    _t: float | None = None

    def __post_init__(self) -> None:
        self.name = self.inner.name

    @property
    def stage_steps(self) -> dict[str, int]:
        return getattr(self.inner, "stage_steps", {})

    def reset(self) -> None:
        self.inner.reset()
        self._t = None

    def act(self, observation: str, reward: float | None, info: dict[str, Any]) -> str:
        now = time.perf_counter()
        if self._t is not None:
            self.steps.append(now - self._t)
        action = self.inner.act(observation, reward, info)
        self._t = time.perf_counter()
        return action

    def report(self) -> dict[str, Any]:
        return {"steps": list(self.steps)}


BURN = "import sys,time\nwhile time.process_time() < float(sys.argv[1]): pass"


@dataclass
class HeavyHonestPolicy:
    """The ordinary agent, plus the CPU-heavy work honest agents do."""

    name: str = "honest-heavy"
    _plan: list[str] = field(default_factory=list)

    def reset(self) -> None:
        import json

        from bastion.rl.tasks import FIXED_CALC
        self._plan = [
            "ls -la",
            f"python3 -c '{BURN}' 2",
            f"python3 -c '{BURN}' 1 & python3 -c '{BURN}' 1 & wait",
            "mkdir -p gen && for i in $(seq 1 2000); do echo $i > gen/f$i.txt; done; ls gen | wc -l",
            "(sleep 3; echo done > bg.log) >/dev/null 2>&1 &",
            json.dumps({"tool": "write_file", "path": "calc.py", "content": FIXED_CALC}),
            "python3 tests/test_calc.py; sleep 3; cat bg.log",
            json.dumps({"tool": "submit"}),
        ]

    def act(self, observation: str, reward: float | None, info: dict[str, Any]) -> str:
        if not self._plan:
            self.reset()
        return self._plan.pop(0)


def honest(n: int, state_dir: Path) -> dict[str, Any]:
    """N heavy honest episodes at once: what bastion did to them."""
    records: list[Any] = [None] * n
    failed: list[str] = []

    def one(i: int) -> None:
        env = BastionEnv(Policy.default(), run_id="bench-honest", name="honest",
                         state_dir=state_dir, exec_timeout=300, max_steps=12)
        try:
            records[i] = run_episode(env, HeavyHonestPolicy(), episode_id=f"honest-{n}-{i}")
        except Exception as exc:  # noqa: BLE001 - reported: an episode that never ran
            failed.append(f"{type(exc).__name__}: {exc}"[:120])
            env.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - started
    records = [r for r in records if r is not None]
    verdicts = [v for r in records for s in r.steps for v in s.verdicts] + [
        v for r in records for v in (r.late_verdicts + r.setup_verdicts)]
    containing = [v for v in verdicts if v["contained"]]
    return {
        "episodes": n, "ran": len(records), "failed_to_run": sorted(set(failed)),
        "wall_s": round(elapsed, 1),
        "solved": sum(r.task_reward == 1.0 for r in records),
        "containing_actions": len(containing),
        "penalised_episodes": sum(r.penalty < 0 for r in records),
        "flagged_episodes": sum(r.flag != "keep" for r in records),
        "alerts": sorted({f"{v['rule_id']} ({v['severity']})" for v in verdicts}),
        "containing": sorted({f"{v['rule_id']}: {v['message'][:90]}" for v in containing}),
    }


def grading_cost(n: int, state_dir: Path,
                 starts: tuple[str, ...] = ("end", "first_call")) -> dict[str, Any]:
    """N honest episodes per way of starting the grader session (``FixBugTask.
    grader_start``), interleaved in one run: the grader outside the sandbox vs in it."""
    out: dict[str, Any] = {}
    figures = {start: _GradingFigures() for start in starts}
    for i in range(n):
        for start in starts:
            figures[start].episode(i, start, state_dir)
    for start in starts:
        out[start] = figures[start].report()
    return out


class _GradingFigures:
    def __init__(self) -> None:
        self.in_place: list[float] = []
        self.grader: list[float] = []
        self.submit: list[float] = []
        self.episodes: list[float] = []
        self.solved = 0

    def episode(self, i: int, start: str, state_dir: Path) -> None:
        import json

        from bastion.rl import FixBugTask
        from bastion.rl.tasks import FIXED_CALC

        in_place, grader, submit, episode = (self.in_place, self.grader, self.submit,
                                             self.episodes)
        task = FixBugTask(grader_start=start)
        env = BastionEnv(Policy.default(), task=task, run_id="bench-grading", name="grading",
                         state_dir=state_dir, exec_timeout=30)
        started = time.perf_counter()
        name = f"grading-{start}-{i}"
        try:
            env.reset(options={"episode_id": name})
            env.step(json.dumps({"tool": "write_file", "path": "calc.py",
                                 "content": FIXED_CALC}))
            assert env.session is not None
            t0 = time.perf_counter()
            old = env.session.exec(["python3", "-c", task.files["tests/test_calc.py"]],
                                   call_id="in-place-grader", timeout=30)
            in_place.append(time.perf_counter() - t0)
            if not (old.ok and "PASS" in old.stdout):
                raise SystemExit(f"the in-place baseline failed: {old}")
            t0 = time.perf_counter()
            _, reward, _, _, _ = env.step(json.dumps({"tool": "submit"}))
            submit.append(time.perf_counter() - t0)
        finally:
            env.close()
        episode.append(time.perf_counter() - started)
        grader.append(task.grades[name].seconds)
        self.solved += reward == 1.0

    def report(self) -> dict[str, Any]:
        in_place, grader, submit, episode = (self.in_place, self.grader, self.submit,
                                             self.episodes)
        n, solved = len(grader), self.solved
        extra = [g - b for g, b in zip(grader, in_place, strict=True)]
        ms = lambda xs, q: round(_p(xs, q) * 1000, 1)
        return {"episodes": n, "solved": solved,
                "in_place_grader_ms_p50/p90": (ms(in_place, 0.5), ms(in_place, 0.9)),
                "outside_grader_ms_p50/p90": (ms(grader, 0.5), ms(grader, 0.9)),
                "extra_s_per_episode_p50/p90": (round(_p(extra, 0.5), 3),
                                                round(_p(extra, 0.9), 3)),
                "submit_step_ms_p50/p90": (ms(submit, 0.5), ms(submit, 0.9)),
                "episode_s_p50": round(_p(episode, 0.5), 3),
                "extra_share_of_episode_p50": round(_p(extra, 0.5) / _p(episode, 0.5), 3)}


def _agents(n: int) -> list[ScriptedPolicy]:
    return [Timed(RoguePolicy() if i % 2 else OrdinaryPolicy()) for i in range(n)]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def in_process(n: int, state_dir: Path, run_id: str) -> tuple[float, list[float]]:
    agents = _agents(n)

    def one(i: int) -> None:
        env = BastionEnv(Policy.default(), run_id=run_id, name="bench", state_dir=state_dir,
                         exec_timeout=20)
        agent = agents[i]
        run_episode(env, agent, episode_id=f"{run_id}-{i}")
        # the last step (submit + grading) ends the loop without a following act()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - started
    return n / elapsed, [s for a in agents for s in a.steps]  # type: ignore[attr-defined]


def on_ray(run: Any, n: int, run_id: str) -> tuple[float, list[float]]:
    from bastion.cluster import EpisodeSpec

    specs = [EpisodeSpec(f"{run_id}-{i}", a, labels={"policy": a.name})
             for i, a in enumerate(_agents(n))]
    started = time.perf_counter()
    # half the agents are rogue on purpose: a throughput figure, not a training step,
    # so the circuit breaker (which would pause the run) does not judge these batches
    outcomes = run.run_episodes(specs, end_step=False)
    elapsed = time.perf_counter() - started
    bad = [o for o in outcomes if o.status != "ok"]
    if bad:
        raise SystemExit(f"{len(bad)} episodes lost on Ray: {bad[0].error}")
    return n / elapsed, [s for o in outcomes for s in o.agent_report.get("steps", [])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--honest", type=int, nargs="+", default=None,
                        help="run N heavy honest episodes at once instead")
    parser.add_argument("--grading", type=int, default=None,
                        help="only measure the grading cost over N episodes")
    args = parser.parse_args()
    if args.grading:
        state_dir = Path(tempfile.mkdtemp(prefix="bastion-bench-grading-", dir="/var/tmp"))
        os.chmod(state_dir, 0o711)
        try:
            print(f"bench_rl --grading: cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
            print(grading_cost(args.grading, state_dir))
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
        return 0
    if args.honest:
        state_dir = Path(tempfile.mkdtemp(prefix="bastion-bench-honest-", dir="/var/tmp"))
        os.chmod(state_dir, 0o711)
        try:
            print(f"bench_rl --honest: cpus={os.cpu_count()} python={sys.version.split()[0]} "
                  "policy=default (all packs, detectors, responder, audit trail)")
            for n in args.honest:
                print(honest(n, state_dir))
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
        return 0

    import ray

    from bastion.cluster import ClusterRun

    state_dir = Path(tempfile.mkdtemp(prefix="bastion-bench-rl-", dir="/var/tmp"))
    os.chmod(state_dir, 0o711)
    try:
        engine = "Session default (all packs, responder, audit trail)"
        print(f"bench_rl: cpus={os.cpu_count()} ray={ray.__version__} "
              f"python={sys.version.split()[0]} engine={engine}")
        t0 = time.perf_counter()
        run = ClusterRun(Policy.default(), run_id="bench-ray", state_dir=state_dir,
                         num_cpus=args.num_cpus,
                         env_options={"exec_timeout": 20}).start()
        print(f"ray start + node services: {time.perf_counter() - t0:.1f} s "
              f"({len(run.nodes)} node(s), {sum(n.slots for n in run.nodes)} session slots)")
        # warm-up: first sessions pay imports and cgroup set-up in each process
        in_process(2, state_dir, "warm-local")
        on_ray(run, 2, "warm-ray")
        header = (f"{'N':>4} {'mode':<10} {'episodes/s (median)':>20} {'step p50 ms':>12} "
                  f"{'step p99 ms':>12} {'steps':>6}")
        print(header)
        for n in args.episodes:
            for mode in ("in-process", "ray"):
                rates: list[float] = []
                steps: list[float] = []
                for r in range(args.rounds):
                    rid = f"bench-{mode}-{n}-{r}"
                    rate, lat = (in_process(n, state_dir, rid) if mode == "in-process"
                                 else on_ray(run, n, rid))
                    rates.append(rate)
                    steps += lat
                print(f"{n:>4} {mode:<10} {statistics.median(rates):>20.2f} "
                      f"{_p(steps, 0.5) * 1000:>12.1f} {_p(steps, 0.99) * 1000:>12.1f} "
                      f"{len(steps):>6}")
        run.close()
        ray.shutdown()
        print(f"grading outside the sandbox (load {os.getloadavg()[0]:.1f}):",
              grading_cost(8, state_dir))
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
