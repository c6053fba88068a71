"""Rule-engine throughput with every built-in pack loaded (target: >= 200k events/s/core).

Events: `command` events (every corpus command, analysed once up front — analysis cost is
measured separately by bench_check.py) and synthetic `exec` events built from the same
commands' argv (what the process sensor reports), plus a small share of net/file/resource
events. One core: the loop runs in this process only. Baselines in the same run:

* `no-index`: the same rules evaluated one by one without the kind/guard prefilter;
* `no-automaton`: the prefilter with a plain substring scan instead of Aho-Corasick.

Usage: python benchmarks/bench_rules.py [--corpora DIR] [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bastion.analysis import analyze_command
from bastion.events import Event, EventKind
from bastion.policy import Policy
from bastion.rules import RuleSet, load_ruleset

DEFAULT_CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


def build_events(corpora: Path, limit: int) -> tuple[list[Event], list[Event]]:
    commands: list[Event] = []
    execs: list[Event] = []
    for path in sorted(corpora.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            cmd = json.loads(line)["cmd"]
            fields = analyze_command(cmd)
            commands.append(Event(kind=EventKind.COMMAND, fields=fields))
            for argv in fields["cmd.argv"][:2]:
                args = argv.split()
                if not args:
                    continue
                name = args[0].rsplit("/", 1)[-1]
                execs.append(Event(kind=EventKind.EXEC, pid=4242, fields={
                    "proc.name": name, "proc.exe": f"/usr/bin/{name}", "proc.args": args,
                    "proc.cmdline": argv, "proc.comm": name[:15], "proc.pname": "bash"}))
            if len(commands) >= limit:
                return commands, execs
    return commands, execs


def other_events(n: int) -> list[Event]:
    out = []
    for i in range(n):
        out.append(Event(kind=EventKind.NET_CONNECT, fields={
            "net.dst_ip": f"198.51.100.{i % 250}", "net.dst_port": 443, "net.app": "tls",
            "net.sni": "pypi.org", "net.decision": "allow"}))
        out.append(Event(kind=EventKind.FILE_WRITE, fields={
            "file.path": f"/workspace/src/m{i}.py", "file.op": "write",
            "file.location": "workspace"}))
        out.append(Event(kind=EventKind.RESOURCE, fields={
            "res.cpu_cores": 0.3, "res.burn_seconds": 0.0, "res.gpu_util": 0.0}))
    return out


def rate(fn, events: list[Event], repeat: int) -> list[float]:
    """Events per CPU-second of this process (per core: the loop is single-threaded, and
    CPU time is not inflated by other processes competing for the machine)."""
    rates = []
    for _ in range(repeat):
        t0 = time.process_time()
        for ev in events:
            fn(ev)
        rates.append(len(events) / (time.process_time() - t0))
    return rates


def no_index(ruleset: RuleSet):
    rules = [r for r in ruleset.rules if r.enabled]

    def match(ev: Event) -> list[str]:
        kind = ev.kind.value
        return [r.id for r in rules if kind in r.kinds and r.predicate(ev)]

    return match


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    policy = Policy.default()
    ruleset = load_ruleset(policy)
    plain = load_ruleset(policy, use_automaton=False)
    commands, execs = build_events(args.corpora, args.events)
    mixed = [*commands, *execs, *other_events(len(commands) // 20)]
    st = ruleset.statistics()
    print(f"rules: {st.rules_enabled} enabled / {st.rules_total} in {len(st.packs)} packs; "
          f"by kind {dict(st.rules_by_kind)}")
    print(f"rules evaluated on every event of their kind (no guard): {dict(st.unguarded_by_kind)}")
    print(f"events: {len(commands)} command, {len(execs)} exec, "
          f"{len(mixed) - len(commands) - len(execs)} other; repeat {args.repeat}; 1 core; "
          f"rates are events per CPU-second (time.process_time)\n")
    rows = [
        ("command events, indexed (Aho-Corasick)", ruleset.match, commands),
        ("exec events, indexed", ruleset.match, execs),
        ("mixed events, indexed", ruleset.match, mixed),
        ("command events, indexed (plain scan)", plain.match, commands),
        ("command events, no index (baseline)", no_index(ruleset), commands),
    ]
    print(f"{'case':<42} {'median ev/s':>12} {'best ev/s':>10} {'µs/event':>9}")
    results = {}
    for label, fn, events in rows:
        r = rate(fn, events, args.repeat if "no index" not in label else max(1, args.repeat // 2))
        med = statistics.median(r)
        results[label] = med
        print(f"{label:<42} {med:>12,.0f} {max(r):>10,.0f} {1e6 / med:>9.2f}")
    base = results["command events, no index (baseline)"]
    print(f"\nindex speed-up over rule-by-rule evaluation: "
          f"{results['command events, indexed (Aho-Corasick)'] / base:.1f}x; "
          f"target >= 200,000 ev/s/core on command and exec events")
    matched = sum(1 for ev in commands if ruleset.match(ev))
    print(f"command events with at least one match: {matched} ({100 * matched / len(commands):.2f}%)")


if __name__ == "__main__":
    main()
