"""The red-team scorecard at RL-rollout scale: the full suite with 64 concurrent honest
episodes (benign workloads repeated until 64 run) beside the attack episodes, all in
real sessions against a private lab on this machine.

Figures: benign episodes with a containing action or an RL penalty (target 0), attacks
contained / right category / right call (targets 100% / >= 95% / >= 95%), bytes that
reached a forbidden lab host (target 0, from the lab firewall's counters), time to
contain a miner. Writes benchmarks/results/redteam.json and redteam.html.

    python benchmarks/bench_redteam.py [--concurrency N] [--suite fast|full] [--filter X]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from _common import bench_state_dir, emit

from bastion.redteam import RunConfig, Runner, load_builtin, select
from bastion.redteam.report import render_terminal, write_html, write_json


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
        **summary, "by_category": card.by_category(),
        "false_positives": sorted({p for r in honest for p in r.problems
                                   if p.startswith("false positive")}),
        "misses": sorted(f"{r.id}: {'; '.join(r.problems)}" for r in card.attacks()
                         if not r.passed),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
