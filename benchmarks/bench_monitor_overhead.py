"""Monitoring overhead: the same workloads in a monitored and an unmonitored session.

    python benchmarks/bench_monitor_overhead.py [--rounds 7] [--execs 1000]

Monitored = the host's process, resource and file sensors + the engine with every
built-in pack + the responder. Unmonitored = a session on a host with no sensors and
no engine. Runs alternate (unmonitored, monitored, ...) so drift hits both alike;
the figure is the ratio of the medians of the calls' wall-clock durations. Beside it,
the CPU seconds the bastion process spent per run (sensors, engine, audit trail), which
does not depend on what else the machine is running.

Workloads: CPU-bound (a sha256 loop in python3, listed as expected so the CPU-burn
detector leaves it alone) and exec-heavy (1,000 short processes from a shell loop).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import bench_state_dir, emit

from bastion import Policy, Session
from bastion.engine import Engine, default_detectors
from bastion.host import Host
from bastion.respond import Responder
from bastion.rules import load_ruleset
from bastion.sensors import uninstall_sensors

CPU = ("python3 -c 'import hashlib\nh=b\"x\"\nfor _ in range({n}): h=hashlib.sha256(h).digest()'")
EXECS = "for i in $(seq {n}); do /bin/true; done"
SETTLE = 0.3


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


class _Unmonitored:
    """An engine that judges nothing: the unmonitored side of the comparison."""

    policy_hash = ""

    def evaluate(self, event: object) -> list:
        return []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--execs", type=int, default=1000)
    ap.add_argument("--only", choices=["cpu_bound", "exec_heavy"], default=None)
    ap.add_argument("--hashes", type=int, default=2_000_000)
    ap.add_argument("--packs", default="", help="comma-separated packs (default: all)")
    args = ap.parse_args()
    # the exec-heavy loop forks ~600/s on purpose: raise the fork-storm limit above it
    # (the detector still runs on every fork, so its cost is in the figure)
    rules: dict = {"detectors": {"expected_processes": ["python3*"],
                                 "fork_storm_per_second": 100_000}}
    if args.packs:
        rules["packs"] = args.packs.split(",")
    policy = Policy.from_dict({"rules": rules})
    plain_state, watched_state = bench_state_dir(), bench_state_dir()
    # the baseline: no sensors watch its sessions and no rule looks at their events
    uninstall_sensors(Host.for_state_dir(plain_state))
    ruleset = load_ruleset(policy)  # every pack the policy names (all, by default)
    engine = Engine(ruleset, policy.response, default_detectors(policy.rules.detectors))
    plain = Session(policy, state_dir=plain_state, engine=_Unmonitored())
    watched = Session(policy, state_dir=watched_state, engine=engine,
                      responder=Responder(policy.response))
    results: dict[str, dict] = {}
    try:
        for name, cmd in (("cpu_bound", CPU.format(n=args.hashes)),
                          ("exec_heavy", EXECS.format(n=args.execs))):
            if args.only and name != args.only:
                continue
            for s in (plain, watched):  # warm-up
                s.exec(cmd)
            base, mon, base_cpu, mon_cpu = [], [], [], []
            for _ in range(args.rounds):
                c = _cpu()
                r = plain.exec(cmd)
                time.sleep(SETTLE)
                base_cpu.append(_cpu() - c)
                assert r.exit_code == 0, r.stderr
                base.append(r.duration)
                c = _cpu()
                r = watched.exec(cmd)
                time.sleep(SETTLE)  # the sensors finish the run's events
                mon_cpu.append(_cpu() - c)
                assert r.exit_code == 0 and not r.verdicts, (r.stderr, r.verdicts)
                mon.append(r.duration)
            b, m = statistics.median(base), statistics.median(mon)
            results[name] = {"unmonitored_median_s": round(b, 4),
                             "monitored_median_s": round(m, 4),
                             "overhead_pct": round((m / b - 1) * 100, 2),
                             # the fastest run of each is the least disturbed by other
                             # load on a shared machine
                             "overhead_pct_of_min": round((min(mon) / min(base) - 1) * 100, 2),
                             "unmonitored_s": [round(x, 4) for x in base],
                             "monitored_s": [round(x, 4) for x in mon],
                             # CPU the bastion process spent per run (sensors, engine,
                             # audit): what monitoring costs whatever else the host runs
                             "bastion_cpu_s_unmonitored": round(statistics.median(base_cpu), 3),
                             "bastion_cpu_s_monitored": round(statistics.median(mon_cpu), 3)}
        events = len(watched.events)
    finally:
        watched.close()
        plain.close()
    emit("monitor_overhead", {
        "rounds": args.rounds, "execs": args.execs, "hashes": args.hashes,
        "rules_enabled": ruleset.statistics().rules_enabled, "events_recorded": events,
        **results,
        "targets_pct": {"cpu_bound": 2, "exec_heavy": 10},
        "meets_target": all(results[k]["overhead_pct"] <= t for k, t in
                            (("cpu_bound", 2), ("exec_heavy", 10)) if k in results),
    })


if __name__ == "__main__":
    main()
