"""An Inspect AI eval on ``sandbox="bastion"`` beside the same eval on Inspect's own
``local`` sandbox, alternating rounds in one run.

    python benchmarks/bench_inspect.py [--samples 32] [--calls 6] [--rounds 2] [--max-samples 8]

Each sample is Inspect's mockllm scripted to make ``--calls`` bash tool calls (read,
edit, run python, list, grep, run the tests) on a small task copied in by Inspect's
``Sample.files``, then a scorer runs the task's tests. Figures:

- eval wall time (``eval()`` start to log written), per sandbox, each round
- per-exec time, from the eval log's own SandboxEvents (``completed - timestamp``),
  p50/p95, and its overhead over ``local`` (bastion's session-per-sample, command
  analysis, durable audit record and sandboxed run vs a plain subprocess)

Both run with an empty HOME (see main): `local` would otherwise source the invoking
user's dotfiles on every `bash --login`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import bench_state_dir, emit, summary_ms
from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.log import read_eval_log
from inspect_ai.model import ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, scorer
from inspect_ai.solver import TaskState, generate, use_tools
from inspect_ai.tool import bash
from inspect_ai.util import SandboxEnvironmentSpec, sandbox

from bastion.frameworks.inspect import BastionSandboxConfig

BUGGY = "def add(a, b):\n    return a - b\n"
TEST = ("import unittest\n\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n")
SCRIPT = [
    "cat calc.py",
    "sed -i 's/a - b/a + b/' calc.py",
    "python3 -c 'from calc import add; print(add(2, 3))'",
    "ls -la",
    "grep -n return calc.py",
    "python3 -m unittest -q test_calc 2>&1 | tail -1",
]


def make_model(calls: int) -> Any:
    script = (SCRIPT * (calls // len(SCRIPT) + 1))[:calls]

    def outputs(messages: list[Any], tools: list[Any], choice: Any, config: Any) -> ModelOutput:
        turn = sum(1 for m in messages if m.role == "assistant")
        out = (ModelOutput.for_tool_call("mockllm/model", "bash", {"command": script[turn]})
               if turn < len(script) else ModelOutput.from_content("mockllm/model", "done"))
        out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)  # no tiktoken
        return out

    return get_model("mockllm/model", custom_outputs=outputs)


@scorer(metrics=[accuracy()])
def grade():  # type: ignore[no-untyped-def]
    async def score(state: TaskState, target: Target) -> Score:
        r = await sandbox().exec(["python3", "-m", "unittest", "-q", "test_calc"])
        return Score(value=CORRECT if r.success else INCORRECT)

    return score


def run_eval(kind: str, samples: int, calls: int, max_samples: int, state: Path,
             logs: Path) -> dict[str, Any]:
    spec = (SandboxEnvironmentSpec("bastion", BastionSandboxConfig(state_dir=str(state)))
            if kind == "bastion" else SandboxEnvironmentSpec("local"))
    task = Task(dataset=[Sample(id=i, input="fix add", files={"calc.py": BUGGY,
                                                              "test_calc.py": TEST})
                         for i in range(samples)],
                solver=[use_tools([bash(timeout=60)]), generate()],
                scorer=grade(), sandbox=spec)
    start = time.monotonic()
    [log] = eval(task, model=make_model(calls), log_dir=str(logs), display="none",
                 max_samples=max_samples, max_sandboxes=max_samples)
    wall = time.monotonic() - start
    if log.status != "success":
        raise SystemExit(f"{kind} eval failed: {log.error}")
    log = read_eval_log(log.location)
    execs = [(e.completed - e.timestamp).total_seconds()
             for s in log.samples or [] for e in s.events
             if e.event == "sandbox" and e.action == "exec" and e.completed is not None]
    correct = sum(1 for s in log.samples or [] if s.scores and
                  next(iter(s.scores.values())).value == CORRECT)
    return {"wall_s": wall, "execs": execs, "correct": correct,
            "samples": len(log.samples or [])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--calls", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-samples", type=int, default=8)
    args = ap.parse_args()
    state = bench_state_dir()
    logs = Path(tempfile.mkdtemp(prefix="bastion-bench-inspect-"))
    # the bash tool runs `bash --login`: under `local` that reads this user's profile
    # (0.4 s for root's here), under bastion the sandbox's empty HOME. An empty HOME for
    # both keeps the comparison about the sandbox, not about a dotfile.
    home = logs / "home"
    home.mkdir()
    os.environ["HOME"] = str(home)
    walls: dict[str, list[float]] = {"bastion": [], "local": []}
    execs: dict[str, list[float]] = {"bastion": [], "local": []}
    correct: dict[str, list[int]] = {"bastion": [], "local": []}
    try:
        for r in range(args.rounds):
            for kind in (("bastion", "local") if r % 2 == 0 else ("local", "bastion")):
                res = run_eval(kind, args.samples, args.calls, args.max_samples, state, logs)
                walls[kind].append(res["wall_s"])
                execs[kind].extend(res["execs"])
                correct[kind].append(res["correct"])
                print(f"round {r} {kind}: {res['wall_s']:.2f}s, {len(res['execs'])} execs, "
                      f"{res['correct']}/{res['samples']} correct", flush=True)
    finally:
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
    b, loc = summary_ms(execs["bastion"]), summary_ms(execs["local"])
    results = {
        "samples": args.samples, "calls_per_sample": args.calls, "rounds": args.rounds,
        "max_samples": args.max_samples,
        "wall_s": {k: [round(w, 2) for w in v] for k, v in walls.items()},
        "wall_ratio_bastion_over_local": round(min(walls["bastion"]) / min(walls["local"]), 2),
        "correct": correct,
        "exec_bastion": b, "exec_local": loc,
        "exec_overhead_p50_ms": round(b["p50_ms"] - loc["p50_ms"], 3),
        "exec_overhead_p95_ms": round(b["p95_ms"] - loc["p95_ms"], 3),
    }
    emit("inspect", results)


if __name__ == "__main__":
    main()
