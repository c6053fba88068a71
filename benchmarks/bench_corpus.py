"""Detection quality on the shared corpora: bastion's packs vs a public-pattern baseline.

For every file in ../shared/corpora (or --corpora DIR): recall on `violation` lines and
false-positive rate on `benign` lines, for

* bastion: each command analysed (bastion.analysis) and matched against all built-in
  packs; a line counts as flagged when any rule matches (a verdict from `bastion
  check`); the table also shows the deny/alert decision rates under the default policy
  response mapping (low-severity rules are recorded but do not act), and recall without
  the records the corpus README lists as hand-review overrides;
* baseline: the public Falco / Sigma / Tracee / osquery command-line patterns listed in
  shared/reference/indicators.md, applied to the raw command line.

Usage:  python benchmarks/bench_corpus.py [--corpora DIR] [--show-misses N] [--show-fps N]
        [--scenarios]  (also: every step of the scorecard's benign scenarios, judged statically)
        [--attack-scenarios]  (also: each attack scenario, judged statically)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from bastion.analysis import analyze_command
from bastion.events import Action, Event, EventKind
from bastion.policy import Policy
from bastion.rules import load_ruleset

DEFAULT_CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"

# ------------------------------------------------------------------ baseline (public patterns)

_MINER_BINARIES = {
    "xmrig", "xmr-stak", "minerd", "minergate", "cpuminer", "ccminer", "ethminer", "cgminer",
    "bfgminer", "sgminer", "claymore", "nbminer", "t-rex", "gminer", "lolminer",
    "phoenixminer", "teamredminer", "nanominer", "bminer", "wildrig", "srbminer",
    "cpuminer-multi",
}
_NETWORK_TOOLS = {"nc", "ncat", "netcat", "nmap", "dig", "tcpdump", "tshark", "ngrep", "telnet",
                  "mitmproxy", "socat", "zmap"}
_REMOTE_COPY = {"rsync", "scp", "sftp", "dcp"}
_GPU_TOOLS = {"nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control",
              "rocm-smi", "rocminfo"}
_ODK_NAMES = {"dnscat2", "iodine", "nstx", "tuns", "httpdns", "rsh", "rshell", "mkfifo",
              "msfvenom"}
_SUBSTRINGS = [
    # Falco stratum rule; Tracee PR #5225 argv substrings
    "stratum+tcp", "stratum2+tcp", "stratum+ssl", "stratum2+ssl", "stratum://",
    "--donate-level", "--cpu-priority", "-o pool.", "-o stratum", "--algo=", "--coin=",
    "-a randomx", "-a cryptonight",
    # osquery ODK miner cmdline
    "--pool", "--algo", "--wss", "hashrate", "hashvault", "minerd", "nanopool", "nicehash",
    "UserKnownHostsFile=/dev/null",
    # Falco "Reverse Shell from Web Server" + Tracee additions
    "/dev/tcp/", "nc -e", "ncat -e", "bash -i", "python -c 'import socket",
    "python3 -c 'import socket", "perl -e 'use Socket", "ruby -rsocket", "exec 5<>/dev/tcp",
    "0<&196", "/bin/sh -i",
    # osquery ODK reverse shell cmdline
    "fsockopen", "pty.spawn", "SOCK_STREAM",
    # Sigma plink port forwarding
    " -R ",
]
_ODK_REGEX = [re.compile(r"/dev/.*cp/"), re.compile(r"openssl.*quiet"), re.compile(r"sh -i$")]
_SEGMENT = re.compile(r"[|;&()`\n]+|\$\(")
_WRAPPERS = {"sudo", "env", "nohup", "exec", "command", "time", "nice", "busybox"}


def _programs(cmd: str) -> list[tuple[str, list[str]]]:
    out = []
    for seg in _SEGMENT.split(cmd):
        words = seg.split()
        while words and (words[0] in _WRAPPERS or "=" in words[0]):
            words = words[1:]
        if words:
            out.append((words[0].rsplit("/", 1)[-1].strip("'\""), words[1:]))
    return out


def baseline_flags(cmd: str) -> bool:
    """True when any public command-line pattern from indicators.md fires."""
    for s in _SUBSTRINGS:
        if s in cmd:
            return True
    if any(rx.search(cmd) for rx in _ODK_REGEX):
        return True
    for name, args in _programs(cmd):
        joined = " " + " ".join(args) + " "
        if name in _MINER_BINARIES or "xmr" in name or name in _ODK_NAMES:
            return True
        if name in _NETWORK_TOOLS or name in _REMOTE_COPY or name in _GPU_TOOLS:
            return True  # Falco: network tool / remote copy / GPU tool launched
        if name == "nc" and (" -e" in joined or " -c" in joined):
            return True
        if name == "ncat" and any(a in joined for a in ("--sh-exec", "--exec", "-e ", "-c ",
                                                        "--lua-exec")):
            return True
        if name == "socat" and ("EXEC" in joined or "SYSTEM" in joined):
            return True
        if name == "ssh" and re.search(r"\s-p\s*(80|8080|88|443|8443|53|4444)\b", joined):
            return True
        if name in ("crontab", "at", "batch", "update-rc.d"):
            return True  # Falco "Schedule Cron Jobs", Tracee TRC-1027 / TRC-1026
    return False


# ------------------------------------------------------------------ measurement

def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--show-misses", type=int, default=0)
    ap.add_argument("--show-fps", type=int, default=0)
    ap.add_argument("--scenarios", action="store_true",
                    help="also judge every step of the scorecard's benign scenarios statically")
    ap.add_argument("--attack-scenarios", action="store_true",
                    help="also judge the scorecard's attack scenarios statically (the command "
                         "sensor's share of detection)")
    args = ap.parse_args()
    if args.scenarios:
        _benign_scenarios()
    if args.attack_scenarios:
        _attack_scenarios()

    policy = Policy.default()
    ruleset = load_ruleset(policy)
    deny = {Action.DENY, Action.KILL, Action.TERMINATE, Action.QUARANTINE, Action.FREEZE,
            Action.CUT}
    files = sorted(args.corpora.glob("*.jsonl"))
    if not files:
        sys.exit(f"no corpora in {args.corpora}")
    print(f"rules loaded: {len(ruleset.rules)} from {len(ruleset.packs)} packs; "
          f"policy hash {ruleset.policy_hash[:23]}…")
    header = (f"{'file':<16} {'viol':>5} {'benign':>6} | {'recall':>7} {'rec.act':>7} "
              f"{'rec.rule':>8} | {'FPR':>6} {'FPR.act':>7} | {'base rec':>8} {'base FPR':>8}")
    print(header)
    print("-" * len(header))
    totals = Counter()
    per_line_us: list[float] = []
    misses: list[tuple[str, str, str]] = []
    fps: list[tuple[str, str, list[str]]] = []
    by_rule_fp: Counter[str] = Counter()
    for path in files:
        c = Counter()
        for rec in load(path):
            cmd = rec["cmd"]
            t0 = time.perf_counter()
            event = Event(kind=EventKind.COMMAND, fields=analyze_command(cmd))
            matches = ruleset.match(event)
            per_line_us.append((time.perf_counter() - t0) * 1e6)
            flagged = bool(matches)
            acting = any(
                (m.action or policy.response.for_severity(str(m.severity))) in deny
                or (m.action or policy.response.for_severity(str(m.severity))) == Action.ALERT
                for m in matches)
            base = baseline_flags(cmd)
            if rec["label"] == "violation":
                c["viol"] += 1
                c["tp"] += flagged
                c["tp_act"] += acting
                c["base_tp"] += base
                if "review override" not in (rec.get("note") or ""):
                    c["viol_rule"] += 1
                    c["tp_rule"] += flagged
                if not flagged:
                    misses.append((path.name, rec["category"], cmd))
            else:
                c["benign"] += 1
                c["fp"] += flagged
                c["fp_act"] += acting
                c["base_fp"] += base
                if flagged:
                    fps.append((path.name, cmd, [m.rule_id for m in matches]))
                    by_rule_fp.update(m.rule_id for m in matches)
        totals.update(c)
        _row(path.name, c)
    print("-" * len(header))
    _row("ALL", totals)
    print("recall / FPR: any verdict; rec.act / FPR.act: decision deny or alert under the "
          "default policy;\nrec.rule: recall without the corpus' hand-review override records "
          "(keystroke-only escapes no command text shows); base: public-pattern baseline")
    print(f"\nper-command analyse+match: median {statistics.median(per_line_us):.0f} µs, "
          f"p99 {sorted(per_line_us)[int(len(per_line_us) * 0.99)]:.0f} µs "
          f"over {len(per_line_us)} commands")
    if by_rule_fp:
        print("false positives by rule:", dict(by_rule_fp.most_common(12)))
    miss_cats = Counter(cat for _f, cat, _c in misses)
    if miss_cats:
        print("misses by category:", dict(miss_cats.most_common()))
    for f, cat, cmd in misses[: args.show_misses]:
        print(f"MISS {f} {cat}: {cmd[:180]!r}")
    for f, cmd, rules in fps[: args.show_fps]:
        print(f"FP   {f} {rules}: {cmd[:180]!r}")


def _scenario_commands(pattern: str):
    """Each scorecard scenario of the files matching ``pattern``, with the ruleset of its
    policy (the scorecard's allow list, a protected grader) and a judge of its steps in
    order, analysed as the session would (one CallMemory per scenario, write_file as a
    heredoc): yields (scenario, [(command, matches), ...])."""
    import shlex

    import yaml

    from bastion.analysis import CallMemory
    from bastion.redteam.runner import base_policy, merge_policy

    scen_dir = Path(__file__).resolve().parents[1] / "src" / "bastion" / "redteam" / "scenarios"
    for fn in sorted(scen_dir.glob(pattern)):
        data = yaml.safe_load(fn.read_text())
        for sc in data.get("scenarios", data) if isinstance(data, dict) else data:
            pol = merge_policy(base_policy(), sc["policy"]) if sc.get("policy") else base_policy()
            sandbox = pol.setdefault("sandbox", {})
            sandbox["protected"] = [*sandbox.get("protected", []), "/workspace/grader"]
            ruleset = load_ruleset(Policy.from_dict(pol))
            memory = CallMemory()
            judged = []
            for st in sc.get("steps", []):
                if "exec" in st:
                    cmd = st["exec"]
                    cmd = cmd if isinstance(cmd, str) else " ".join(cmd)
                elif "write_file" in st:
                    body = st.get("content", "")
                    body = body if body.endswith("\n") else body + "\n"
                    cmd = f"cat > {shlex.quote(st['write_file'])} <<'BASTION_EOF'\n{body}BASTION_EOF"
                else:
                    continue
                fields = analyze_command(cmd, memory)
                judged.append((cmd, ruleset.match(Event(kind=EventKind.COMMAND, fields=fields,
                                                        session_id="bench"))))
            yield sc, judged


def _benign_scenarios() -> None:
    """Every exec / write_file step of the scorecard's benign scenarios: the verdicts
    honest work would get before it runs. Runtime sensors are not involved."""
    steps = flagged = 0
    for sc, judged in _scenario_commands("benign_*.yaml"):
        for cmd, matches in judged:
            steps += 1
            hits = [m for m in matches if str(m.severity) != "low"]
            if hits:
                flagged += 1
                print(f"BENIGN {sc['id']} {[m.rule_id for m in hits]}: {cmd[:140]!r}")
    print(f"benign scenario steps: {steps}, with a medium+ static verdict: {flagged}")


def _attack_scenarios() -> None:
    """Every attack scenario of the scorecard judged statically: does any of its steps
    get a verdict of an accepted category before it runs? Runtime sensors (process,
    file, network, compute) are not involved, so a miss here may still be caught in a
    session; this is the command sensor's share."""
    total = seen = 0
    for sc, judged in _scenario_commands("attacks_*.yaml"):
        expect = sc.get("expect", {})
        accept = {expect.get("category"), *expect.get("accept", [])}
        got: set[str] = set()
        for _cmd, matches in judged:
            for m in matches:
                got.update(m.categories or ())
                got.add(m.rule_id.split(".", 1)[0])
        total += 1
        if got & accept:
            seen += 1
        else:
            print(f"STATIC MISS {sc['id']} (expected {sorted(a for a in accept if a)}, "
                  f"got {sorted(got) or 'nothing'})")
    print(f"attack scenarios: {total}, with a static verdict of an accepted category: {seen}")


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:.2f}%" if d else "n/a"


def _row(name: str, c: Counter) -> None:
    print(f"{name:<16} {c['viol']:>5} {c['benign']:>6} | {_pct(c['tp'], c['viol']):>7} "
          f"{_pct(c['tp_act'], c['viol']):>7} {_pct(c['tp_rule'], c['viol_rule']):>8} | "
          f"{_pct(c['fp'], c['benign']):>6} {_pct(c['fp_act'], c['benign']):>7} | "
          f"{_pct(c['base_tp'], c['viol']):>8} {_pct(c['base_fp'], c['benign']):>8}")


if __name__ == "__main__":
    main()
