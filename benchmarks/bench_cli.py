"""One-shot CLI use: `bastion run -- true` and `bastion check` start-up, side by side.

Measured in one run, alternating the variants each round so machine noise hits them
alike (medians over --rounds):

* `python -c pass` — the interpreter's own start, the floor for any Python CLI;
* `bwrap --ro-bind / / --unshare-all true` — a bare namespace sandbox, no monitoring;
* `bastion check` with one command on stdin (policy, packs, analyser; nothing runs);
* `bastion run -- true` in-process (BASTION_NO_NODE=1): a whole session is created,
  watched, recorded and torn down by the command itself;
* `bastion run -- true` through a running `bastion node` of the same state directory:
  the daemon owns the session, the command is a thin client.

Targets (issue 15): run ≤ 0.35 s median, check ≤ 0.2 s.

Usage: python benchmarks/bench_cli.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bastion_command, bench_state_dir, emit, pct, start_node


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    bastion = bastion_command()
    state = bench_state_dir()
    env = {**os.environ, "BASTION_STATE_DIR": str(state)}
    node = start_node(state)
    try:
        variants: dict[str, tuple[list[str], dict[str, str], bytes | None]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], env, None),
            "bwrap bare sandbox: true": (["bwrap", "--ro-bind", "/", "/", "--dev", "/dev",
                                          "--unshare-all", "true"], env, None),
            "bastion check (1 command)": ([bastion, "check"], env, b"ls -la\n"),
            "bastion run -- true (no node)": ([bastion, "run", "--", "true"],
                                              {**env, "BASTION_NO_NODE": "1"}, None),
            "bastion run -- true (via node)": ([bastion, "run", "--", "true"], env, None),
        }
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for name, (argv, venv, stdin) in variants.items():
                t0 = time.perf_counter()
                subprocess.run(argv, env=venv, input=stdin, capture_output=True, check=True)
                samples[name].append(time.perf_counter() - t0)
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=60)
        shutil.rmtree(state, ignore_errors=True)
    base = statistics.median(samples["python -c pass"])
    print(f"{'command':<34} {'p50 s':>7} {'p90 s':>7} {'x python start':>15}")
    results = {}
    for name, xs in samples.items():
        p50, p90 = statistics.median(xs), pct(xs, 90)
        print(f"{name:<34} {p50:>7.3f} {p90:>7.3f} {p50 / base:>15.1f}")
        results[name] = {"p50_s": round(p50, 4), "p90_s": round(p90, 4), "n": len(xs)}
    emit("cli", results)


if __name__ == "__main__":
    main()
