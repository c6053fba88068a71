"""One-shot CLI use: `bastion run -- true` and `bastion check` start-up, side by side.

Measured in one run, alternating the variants each round so machine noise hits them
alike (medians over --rounds):

* `python -c pass` — the interpreter's own start, the floor for any Python CLI;
* `bwrap --ro-bind / / --unshare-all true` — a bare namespace sandbox, no monitoring;
* `bastion check` with one command on stdin, through the node (``cli.oneshot``: no
  typer, pydantic or rules imported) and in-process (BASTION_NO_NODE=1: policy, packs,
  analyser; nothing runs);
* `bastion run -- true` in-process (BASTION_NO_NODE=1): a whole session is created,
  watched, recorded and torn down by the command itself;
* `bastion run -- true` through a running `bastion node --warm 0` of the same state
  directory: the daemon owns the session, the command is a thin client
  (``cli.oneshot``), and every run pays a session's creation in the daemon;
* the same through `bastion node` as it starts by default (``--warm 1``): a default
  session is ready before the command asks (the next one is made while the command
  runs; a round that comes before it is ready pays a creation).

A run whose command fails is counted under ``failed`` and not timed. ``own CPU`` is the
command's own user+system CPU (its process tree, not the node's): on a loaded machine,
where wall times stretch, it shows what the command itself costs.

Targets (issue 15): run ≤ 0.35 s median, check ≤ 0.2 s.

Usage: python benchmarks/bench_cli.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import resource
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
    load0 = os.getloadavg()[0]
    state = bench_state_dir()
    env = {**os.environ, "BASTION_STATE_DIR": str(state)}
    node = start_node(state, "--warm", "0")
    warm_state = bench_state_dir()
    warm_env = {**os.environ, "BASTION_STATE_DIR": str(warm_state)}
    warm_node = start_node(warm_state)  # the default: --warm 1
    try:
        variants: dict[str, tuple[list[str], dict[str, str], bytes | None]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], env, None),
            "bwrap bare sandbox: true": (["bwrap", "--ro-bind", "/", "/", "--dev", "/dev",
                                          "--unshare-all", "true"], env, None),
            "bastion check (1 command, via node)": ([bastion, "check"], env, b"ls -la\n"),
            "bastion check (1 command, no node)": ([bastion, "check"],
                                                   {**env, "BASTION_NO_NODE": "1"}, b"ls -la\n"),
            "bastion run -- true (no node)": ([bastion, "run", "--", "true"],
                                              {**env, "BASTION_NO_NODE": "1"}, None),
            "bastion run -- true (via node --warm 0)": ([bastion, "run", "--", "true"],
                                                        env, None),
            "bastion run -- true (via node, default --warm 1)": (
                [bastion, "run", "--", "true"], warm_env, None),
        }
        samples: dict[str, list[float]] = {k: [] for k in variants}
        failed: dict[str, int] = dict.fromkeys(variants, 0)
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for name, (argv, venv, stdin) in variants.items():
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                r = subprocess.run(argv, env=venv, input=stdin, capture_output=True, check=False)
                wall = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if r.returncode != 0:  # counted, not timed (a loaded machine's bwrap can fail)
                    failed[name] += 1
                    continue
                samples[name].append(wall)
                # the command's own CPU (user + system): what it costs whatever the load
                cpu[name].append(after.ru_utime - before.ru_utime
                                 + after.ru_stime - before.ru_stime)
    finally:
        for n in (node, warm_node):
            n.send_signal(signal.SIGTERM)
            n.wait(timeout=60)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(warm_state, ignore_errors=True)
    base = statistics.median(samples["python -c pass"])
    load = os.getloadavg()
    print(f"load average: {load0:.1f} at the start, {load[0]:.1f} at the end")
    print(f"{'command':<50} {'p50 s':>7} {'p90 s':>7} {'x python start':>15} "
          f"{'own CPU p50 s':>14} failed")
    results = {}
    for name, xs in samples.items():
        if not xs:
            print(f"{name:<50} every run failed ({failed[name]})")
            results[name] = {"failed": failed[name], "n": 0}
            continue
        p50, p90 = statistics.median(xs), pct(xs, 90)
        own = statistics.median(cpu[name])
        print(f"{name:<50} {p50:>7.3f} {p90:>7.3f} {p50 / base:>15.1f} {own:>14.3f} "
              f"{failed[name]:>6}")
        results[name] = {"p50_s": round(p50, 4), "p90_s": round(p90, 4), "n": len(xs),
                         "cpu_p50_s": round(own, 4), "failed": failed[name]}
    results["load_average"] = [load0, load[0]]
    emit("cli", results)


if __name__ == "__main__":
    main()
