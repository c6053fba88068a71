"""Forbidden exec -> process killed, p50/p99, inside real sessions.

    python benchmarks/bench_kill_latency.py [--n 200] [--packs mining,tunnels]

Each tool call starts a copy of /bin/sleep named ``forbidden-bin`` (the command text
does not reveal it, so the pre-exec command check cannot deny it: the process sensor
must catch the exec). All built-in packs plus one exec rule are loaded. Latencies are
measured on the kernel's clock: the exec and exit timestamps come from the process
connector (CLOCK_MONOTONIC), the verdict and action timestamps from the same clock in
bastion. Baseline beside it: the same measurement with only the one exec rule loaded
(what the packs add to the path).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import bench_state_dir, emit, summary_ms

from bastion import Policy, Session
from bastion.engine import Engine, default_detectors
from bastion.events import EventKind
from bastion.host import Host
from bastion.respond import Responder
from bastion.rules import PackSource, builtin_pack_names, compile_sources
from bastion.rules.loader import builtin_pack_source

RULE = """
- requires_engine: 1
- rule: bench.forbidden_exec
  desc: benchmark rule
  condition: proc.name = forbidden-bin
  output: "forbidden %proc.name"
  severity: high
  kinds: [exec]
"""


def measure(state: Path, n: int, sources: list[PackSource], policy: Policy) -> dict:
    ruleset = compile_sources([*sources, PackSource("bench", "bench.yaml", RULE)],
                              policy_hash=policy.hash)
    engine = Engine(ruleset, policy.response, default_detectors(policy.rules.detectors))
    to_verdict, to_action, to_dead, durations = [], [], [], []
    with Session(policy, state_dir=state, engine=engine,
                 responder=Responder(policy.response)) as s:
        s.exec("cp /bin/sleep ./f && mv f forbidden-bin", call_id="setup")
        for i in range(n):
            cid = f"k{i}"
            r = s.exec("n=forbidden; ./$n-bin 30", call_id=cid, timeout=10)
            durations.append(r.duration)
            if r.outcome.value != "killed" and r.signal != 9:
                raise SystemExit(f"call {cid} was not killed: {r.outcome} {r.reason}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            exits = {e.pid: e for e in s.events if e.kind is EventKind.EXIT}
            # /proc is read after the kernel reports an exec; when bash execs the binary
            # straight away both execs read as the binary: keep the later, true one
            execs = {e.pid: e for e in s.events if e.kind is EventKind.EXEC
                     and e.fields.get("proc.name") == "forbidden-bin"}
            if all(pid in exits for pid in execs):
                break
            time.sleep(0.05)
        verdicts = {v.event_ids[-1]: v for v in s.verdicts if v.rule_id == "bench.forbidden_exec"}
        actions = {e.fields["action.verdict"]: e for e in s.events if e.kind is EventKind.ACTION}
        for ev in execs.values():
            v = verdicts[ev.id]
            to_verdict.append((v.ts - ev.ts) / 1e9)
            to_action.append((actions[v.id].ts - ev.ts) / 1e9)
            to_dead.append((exits[ev.pid].ts - ev.ts) / 1e9)
    return {"rules_enabled": ruleset.statistics().rules_enabled,
            "exec_to_verdict": summary_ms(to_verdict),
            "exec_to_kill_issued": summary_ms(to_action),
            "exec_to_process_dead": summary_ms(to_dead),
            "call_duration": summary_ms(durations)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--packs", default="", help="comma-separated packs (default: all)")
    args = ap.parse_args()
    packs = args.packs.split(",") if args.packs else builtin_pack_names()
    state = bench_state_dir()
    Host.for_state_dir(state)  # its sessions are watched by the process's sensors
    policy = Policy.from_dict({"response": {"high": "kill"}})
    baseline = measure(state, args.n, [], policy)
    full = measure(state, args.n, [builtin_pack_source(p) for p in packs], policy)
    dead = full["exec_to_process_dead"]
    emit("kill_latency", {
        "n": args.n, "packs": list(packs),
        "all_packs": full,
        "baseline_one_rule": baseline,
        "target_p99_ms": 20, "meets_target": dead["p99_ms"] <= 20,
    })


if __name__ == "__main__":
    main()
