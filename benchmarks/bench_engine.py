"""Rule engine throughput, all built-in packs loaded, beside the engine with no rules.

    python benchmarks/bench_engine.py [--events 50000] [--rounds 5]

Events are a realistic mix built before timing: tool-call commands from the shared
corpora (analysed like submitted calls), exec/fork/exit events for the programs they
run, connections and DNS queries to documentation addresses, file writes and
per-process resource samples. Two streams: a benign one (an agent doing its task)
and a mixed one with attacks in it (~8% of events raise a verdict, each rendered
and attributed). One thread: the figures are per core.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit

from bastion import Policy
from bastion.analysis import analyze_command
from bastion.engine import Engine, default_detectors
from bastion.events import Event, EventKind
from bastion.rules import builtin_pack_names, compile_sources, load_ruleset

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
if not CORPORA.exists():
    CORPORA = Path("/work/shared/corpora")


def _commands(limit: int, benign: bool) -> list[str]:
    cmds: list[str] = []
    for path in sorted(CORPORA.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if not benign or item.get("label") == "benign":
                cmds.append(item["cmd"])
    random.Random(1).shuffle(cmds)
    return cmds[:limit]


def _attr(i: int) -> dict:
    return {"session_id": "s-bench", "run_id": "r", "episode_id": "e", "step": i % 50,
            "call_id": f"c{i % 50}", "pid": 1000 + i % 4000, "ppid": 999}


def build_events(n: int, benign: bool = False) -> list[Event]:
    """``benign``: what an agent doing its task produces (benign corpus commands,
    HTTPS to package mirrors, source edits); otherwise attacks are mixed in (every
    corpus, persistence writes, odd ports, random-looking DNS names)."""
    rng = random.Random(7)
    cmds = _commands(3000, benign)
    analysed = [analyze_command(c) for c in cmds]
    events: list[Event] = []
    i = 0
    while len(events) < n:
        i += 1
        cmd, fields = cmds[i % len(cmds)], analysed[i % len(cmds)]
        try:
            argv = shlex.split(cmd)[:8] or ["sh"]
        except ValueError:
            argv = cmd.split()[:8] or ["sh"]
        name = argv[0].rsplit("/", 1)[-1]
        proc = {"proc.name": name, "proc.exe": f"/usr/bin/{name}", "proc.args": argv,
                "proc.cmdline": " ".join(argv), "proc.cwd": "/workspace", "proc.uid": 2000001,
                "proc.pname": "bash", "proc.pcmdline": "bash -c x", "proc.anames": ["bash"],
                "proc.partial": False}
        r = rng.random()
        a = _attr(i)
        if r < 0.10:
            events.append(Event(EventKind.COMMAND, fields=fields, **a))
        elif r < 0.40:
            events.append(Event(EventKind.EXEC, fields=proc, **a))
        elif r < 0.55:
            events.append(Event(EventKind.FORK, fields={"proc.name": "bash"}, **a))
        elif r < 0.70:
            events.append(Event(EventKind.EXIT, fields={"proc.name": name, "proc.exit_code": 0}, **a))
        elif r < 0.78:
            events.append(Event(EventKind.NET_CONNECT, fields={
                "net.dst_ip": f"203.0.113.{rng.randrange(1, 250)}",
                "net.dst_port": 443 if benign else rng.choice([22, 80, 443, 3333, 4444, 8080]),
                "net.proto": "tcp",
                "net.app": "tls" if benign else rng.choice(["tls", "http", "ssh", "unknown"]),
                "net.sni": "example.org", "net.decision": "allow"}, **a))
        elif r < 0.84:
            events.append(Event(EventKind.DNS_QUERY, fields={
                "dns.name": rng.choice(["pypi.org", "files.pythonhosted.org"] if benign else
                                       ["pypi.org", "files.pythonhosted.org", "a1b2c3.example"]),
                "dns.type": "A", "dns.decision": "allow",
                "dns.tunnel_score": rng.random() * (0.2 if benign else 1.0)}, **a))
        elif r < 0.90:
            events.append(Event(EventKind.FILE_WRITE, fields={
                "file.path": "/workspace/src/a.py" if benign else rng.choice(
                    ["/workspace/src/a.py", "/workspace/.bashrc"]),
                "file.op": "write", "file.location": "workspace" if benign else "persistence"},
                **a))
        else:
            events.append(Event(EventKind.RESOURCE, fields={
                "res.scope": "process", "res.cpu_cores": rng.random() * 0.8,
                "res.interval": 0.25, "proc.name": name}, **a))
    return events


def run(engine: Engine, events: list[Event], rounds: int) -> tuple[float, int]:
    rates = []
    verdicts = 0
    for _ in range(rounds):
        t = time.perf_counter()
        for ev in events:
            verdicts += len(engine.evaluate(ev))
        rates.append(len(events) / (time.perf_counter() - t))
    return statistics.median(rates), verdicts // rounds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    packs = builtin_pack_names()
    policy = Policy.from_dict({"rules": {"packs": packs}})
    events = build_events(args.events)
    benign = build_events(args.events, benign=True)
    ruleset = load_ruleset(policy)
    full = Engine(ruleset, policy.response, default_detectors(policy.rules.detectors))
    empty = Engine(compile_sources([], policy_hash="none"), policy.response,
                   default_detectors(policy.rules.detectors))
    run(full, events[:2000], 1)  # warm caches
    base_rate, _ = run(empty, events, args.rounds)
    rate, verdicts = run(full, events, args.rounds)
    benign_rate, benign_verdicts = run(full, benign, args.rounds)
    stats = ruleset.statistics()
    emit("engine", {
        "events": len(events), "rounds": args.rounds, "packs": list(packs),
        "rules_enabled": stats.rules_enabled,
        "events_per_s_all_rules_benign_stream": round(benign_rate),
        "verdicts_per_round_benign_stream": benign_verdicts,
        "events_per_s_all_rules_mixed_stream": round(rate),
        "verdicts_per_round_mixed_stream": verdicts,
        "events_per_s_no_rules_baseline": round(base_rate),
        "target_events_per_s": 200_000, "meets_target": benign_rate >= 200_000,
    })


if __name__ == "__main__":
    main()
