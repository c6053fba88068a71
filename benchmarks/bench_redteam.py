"""The red-team scorecard at RL-rollout scale: the full suite with 64 concurrent honest
episodes (benign workloads repeated until 64 run) beside the attack episodes, all in
real sessions against a private lab on this machine.

Figures: benign episodes with a containing action or an RL penalty (target 0), attacks
contained / right category / right call (targets 100% / >= 95% / >= 95%), bytes that
reached a forbidden lab host (target 0, from the lab firewall's counters), time to
contain a miner, honest episodes whose call ran out of its own exec timeout (no
verdict: the host's load), per scenario file, and the host's 1-minute load average
sampled every 10 s during the run (the machine is shared: figures mean little without
it). Writes benchmarks/results/redteam.json and redteam.html.

    python benchmarks/bench_redteam.py [--concurrency N] [--suite fast|full] [--filter X]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from _common import bench_state_dir, emit

from bastion.redteam import RunConfig, Runner, load_builtin, select
from bastion.redteam.report import render_terminal, write_html, write_json


class LoadSampler:
    """The host's 1-minute load average every ``interval`` seconds while the run lasts."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> LoadSampler:  # noqa: PYI034 - a final class
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float | int]:
        values = sorted(self.samples) or [0.0]
        return {"min": round(values[0], 1), "median": round(values[len(values) // 2], 1),
                "max": round(values[-1], 1), "samples": len(self.samples)}


def by_file(card: Any) -> dict[str, dict[str, int]]:
    """Per scenario file: honest episodes clean, attacks contained / right category /
    right call (the held-out files read apart from the rest)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in card.results:
        row = out[Path(r.where.rsplit(":", 1)[0]).name]
        if r.kind == "benign":
            row["benign"] += 1
            row["benign_clean"] += int(r.containing == 0 and r.penalty == 0)
            row["benign_passed"] += int(r.passed)
        else:
            row["attacks"] += 1
            row["contained"] += int(r.contained)
            row["right_category"] += int(r.right_category)
            row["right_call"] += int(r.right_call)
    return {k: dict(v) for k, v in sorted(out.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--suite", default="full", choices=["fast", "full"])
    parser.add_argument("--filter", action="append", default=[])
    args = parser.parse_args()
    scenarios = select(load_builtin(), suite=args.suite, patterns=args.filter)
    state = bench_state_dir()
    try:
        runner = Runner(RunConfig(state_dir=state, concurrency=args.concurrency,
                                  honest_episodes=args.concurrency, run_id="redteam-bench"))

        def progress(what: str, result: object, done: int, total: int) -> None:
            if result is not None:
                r = result  # ScenarioResult
                print(f"[{done}/{total}] {r.status:5} {r.episode} {r.duration:.1f}s"  # type: ignore[attr-defined]
                      + (f" - {r.problems[0]}" if r.problems else "")  # type: ignore[attr-defined]
                      + (f" - {r.error}" if r.error else ""), flush=True)  # type: ignore[attr-defined]

        with LoadSampler() as load:
            card = runner.run(scenarios, suite=args.suite, progress=progress)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    render_terminal(card)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    write_json(card, out / "redteam-scorecard.json")
    write_html(card, out / "redteam.html")
    summary = card.summary()
    honest = card.benign()
    emit("redteam", {
        "suite": args.suite, "concurrency": args.concurrency, "episodes": len(card.results),
        "honest_episodes": len(honest), "duration_s": round(card.duration, 1),
        **summary, "by_category": card.by_category(), "by_file": by_file(card),
        "host_load_1min": load.summary(),
        "honest_call_timeouts": sum(1 for r in honest
                                    if any(c.outcome == "timeout" for c in r.calls)),
        "false_positives": sorted({p for r in honest for p in r.problems
                                   if p.startswith("false positive")}),
        "misses": sorted(f"{r.id}: {'; '.join(r.problems)}" for r in card.attacks()
                         if not r.passed),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
