"""Throughput of `bastion check` (target: thousands of commands per second).

Measured in one run over the shared corpora (or --corpora DIR):

* end to end: `bastion check --json` as a subprocess fed N commands on stdin
  (includes interpreter start-up and policy/pack loading, reported separately);
* in process: `run_check` over the same lines (what a library caller gets);
* components: command analysis alone, and rule matching alone on pre-analysed events;
* baseline: the same subprocess reading the same stdin with `bastion check` replaced
  by `cat` (pure pipe cost).

Usage: python benchmarks/bench_check.py [--corpora DIR] [--n N] [--repeat R]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bastion.analysis import analyze_command
from bastion.checking import run_check
from bastion.events import Event, EventKind
from bastion.policy import Policy
from bastion.rules import load_ruleset

DEFAULT_CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


def corpus_lines(corpora: Path, n: int) -> list[str]:
    out: list[str] = []
    for path in sorted(corpora.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            out.append(json.dumps({"id": rec["id"], "cmd": rec["cmd"]}))
    return (out * (n // max(len(out), 1) + 1))[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    lines = corpus_lines(args.corpora, args.n)
    data = ("\n".join(lines) + "\n").encode()
    bastion = shutil.which("bastion") or str(Path(sys.executable).with_name("bastion"))
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    print(f"{len(lines)} commands from {args.corpora}; repeat {args.repeat}; median shown\n")

    def timed(argv: list[str], payload: bytes) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, input=payload, capture_output=True, env=env, check=True)
        return time.perf_counter() - t0, proc.stdout

    startup = statistics.median(timed([bastion, "check", "--json"], b"")[0]
                                for _ in range(args.repeat))
    e2e = []
    for _ in range(args.repeat):
        secs, out = timed([bastion, "check", "--json"], data)
        assert out.count(b"\n") == len(lines), "one output line per input line"
        e2e.append(secs)
    cat = statistics.median(timed(["cat"], data)[0] for _ in range(args.repeat))

    policy = Policy.default()
    inproc = []
    for _ in range(args.repeat):
        buf = io.StringIO()
        t0 = time.perf_counter()
        run_check(io.StringIO("\n".join(lines) + "\n"), buf, policy, as_json=True)
        inproc.append(time.perf_counter() - t0)

    cmds = [json.loads(x)["cmd"] for x in lines]
    t0 = time.perf_counter()
    analysed = [analyze_command(c) for c in cmds]
    t_an = time.perf_counter() - t0
    ruleset = load_ruleset(policy)
    events = [Event(kind=EventKind.COMMAND, fields=f) for f in analysed]
    t0 = time.perf_counter()
    for ev in events:
        ruleset.match(ev)
    t_match = time.perf_counter() - t0

    n = len(lines)
    med = statistics.median(e2e)
    print(f"{'measure':<46} {'seconds':>8} {'commands/s':>11}")
    print(f"{'bastion check --json, end to end (subprocess)':<46} {med:>8.2f} {n / med:>11,.0f}")
    print(f"{'  of which start-up + pack load (empty input)':<46} {startup:>8.2f}")
    print(f"{'  steady state (end to end minus start-up)':<46} {med - startup:>8.2f} "
          f"{n / (med - startup):>11,.0f}")
    print(f"{'run_check in process':<46} {statistics.median(inproc):>8.2f} "
          f"{n / statistics.median(inproc):>11,.0f}")
    print(f"{'  analysis only (tree-sitter + decoding)':<46} {t_an:>8.2f} {n / t_an:>11,.0f}")
    print(f"{'  rule matching only (all packs)':<46} {t_match:>8.2f} {n / t_match:>11,.0f}")
    print(f"{'baseline: cat of the same input':<46} {cat:>8.3f} {n / cat:>11,.0f}")


if __name__ == "__main__":
    main()
