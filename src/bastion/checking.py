"""The static verdict (`bastion check`) for commands, without running anything.

Reads commands on stdin — one per line, or JSON lines with a ``cmd`` field (other fields
such as ``id`` are echoed back) — analyses each exactly as a session's command sensor
does, matches it against the policy's rule packs and prints the verdict.

``--json`` prints one JSON object per input line, in input order. Schema
``bastion.check/1`` (additive changes keep the version; removals or changed meanings
bump it)::

    {
      "schema": "bastion.check/1",
      "line": 1,                      # 1-based input line number
      "id": "...",                    # only when the input line was JSON with an "id"
      "cmd": "ssh -R ...",            # the command as read
      "decision": "deny",             # allow | alert | deny
      "severity": "critical",         # highest matched severity, or null
      "rules": ["tunnels.ssh_port_forward"],
      "categories": ["tunnel"],
      "mitre": ["T1572"],
      "verdicts": [{"rule_id", "severity", "action", "message", "categories", "mitre",
                    "evidence"}],
      "decoded": {"names": [...], "argv": [...], "payloads": [...], "features": [...],
                  "parse_error": false, "depth": 0,
                  # the parsed facts rules judge (additive in bastion.check/1):
                  "reads": [...], "writes": [...], "deletes": [...], "hosts": [...],
                  "persists": [...]},
      "policy_hash": "sha256:..."
    }

The policy decides what the reward-integrity rules protect: its ``sandbox.protected``
paths are the grader (``--policy task.yaml``); with the default policy there is none.

Decision: each match's action is the rule's own ``action`` if it has one, else the
policy's ``response`` mapping for its severity. deny, kill, terminate, quarantine,
freeze and cut (a command has no connection to cut) mean **deny**; alert means
**alert**; none means **allow** (the verdict is still reported). The strongest wins.
A line that is not valid input (a JSON object without a string ``cmd``) is an error:
exit status 2, nothing guessed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from .analysis import analyze_command
from .errors import PolicyError
from .events import Action, Event, EventKind, Severity
from .policy import Policy
from .rules import RuleMatch, RuleSet, load_ruleset

__all__ = ["SCHEMA", "CheckResult", "check_command", "check_lines", "decision_for", "run_check"]

SCHEMA = "bastion.check/1"
_DENY = frozenset({Action.DENY, Action.KILL, Action.TERMINATE, Action.QUARANTINE,
                   Action.FREEZE, Action.CUT})
_RANK = {"allow": 0, "alert": 1, "deny": 2}


def decision_for(match: RuleMatch, policy: Policy) -> tuple[str, Action]:
    action = match.action or policy.response.for_severity(str(match.severity))
    if action in _DENY:
        return "deny", action
    if action == Action.ALERT:
        return "alert", action
    return "allow", action


class CheckResult(dict):  # type: ignore[type-arg]
    """One output object (a dict, so it serialises as is)."""


def check_command(cmd: str, ruleset: RuleSet, policy: Policy, *, line: int = 0,
                  extra: dict[str, Any] | None = None) -> CheckResult:
    fields = analyze_command(cmd)
    matches = ruleset.match(Event(kind=EventKind.COMMAND, fields=fields))
    decision = "allow"
    severity: Severity | None = None
    verdicts = []
    for m in matches:
        d, action = decision_for(m, policy)
        if _RANK[d] > _RANK[decision]:
            decision = d
        if severity is None or m.severity > severity:
            severity = m.severity
        verdicts.append({
            "rule_id": m.rule_id, "severity": str(m.severity), "action": action.value,
            "message": m.message, "categories": list(m.categories), "mitre": list(m.mitre),
            "evidence": dict(m.evidence),
        })
    out = CheckResult(schema=SCHEMA, line=line)
    if extra and "id" in extra:
        out["id"] = extra["id"]
    out.update(
        cmd=cmd,
        decision=decision,
        severity=str(severity) if severity is not None else None,
        rules=[m.rule_id for m in matches],
        categories=sorted({c for m in matches for c in m.categories}),
        mitre=sorted({t for m in matches for t in m.mitre}),
        verdicts=verdicts,
        decoded={
            "names": fields["cmd.names"], "argv": fields["cmd.argv"],
            "payloads": fields["cmd.payloads"], "features": fields["cmd.features"],
            "parse_error": fields["cmd.parse_error"], "depth": fields["cmd.depth"],
            "reads": fields.get("cmd.reads", []), "writes": fields.get("cmd.writes", []),
            "deletes": fields.get("cmd.deletes", []), "hosts": fields.get("cmd.hosts", []),
            "persists": fields.get("cmd.persists", []),
        },
        policy_hash=ruleset.policy_hash,
    )
    return out


def _inputs(stream: TextIO) -> Iterator[tuple[int, str, dict[str, Any] | None]]:
    for n, raw in enumerate(stream, 1):
        line = raw.removesuffix("\n")
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None  # a command that happens to start with "{"
            if isinstance(obj, dict):
                cmd = obj.get("cmd")
                if not isinstance(cmd, str):
                    raise PolicyError(f"line {n}: JSON input needs a string 'cmd' field",
                                      file="<stdin>", line=n)
                yield n, cmd, obj
                continue
        yield n, line, None


def run_check(stream: TextIO, out: TextIO, policy: Policy, *, as_json: bool,
              ruleset: RuleSet | None = None) -> dict[str, int]:
    """``ruleset``: the policy's compiled packs, when the caller keeps them (the node
    daemon answers many `bastion check` calls with one)."""
    ruleset = ruleset if ruleset is not None else load_ruleset(policy)
    counts = {"allow": 0, "alert": 0, "deny": 0}
    for n, cmd, obj in _inputs(stream):
        result = check_command(cmd, ruleset, policy, line=n, extra=obj)
        counts[result["decision"]] += 1
        if as_json:
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
        else:
            _print_text(result, out)
    return counts


def _print_text(result: CheckResult, out: TextIO) -> None:
    decision = result["decision"].upper()
    cmd = result["cmd"].replace("\n", "\\n")
    if len(cmd) > 160:
        cmd = cmd[:157] + "..."
    if not result["rules"]:
        out.write(f"{decision:<5} {'-':<8} {cmd}\n")
        return
    out.write(f"{decision:<5} {result['severity']:<8} {cmd}\n")
    out.writelines(f"      {v['severity']:<8} {v['rule_id']} [{', '.join(v['categories'])}]"
                  f" {' '.join(v['mitre'])} -> {v['action']}\n" for v in result["verdicts"])
    for p in result["decoded"]["payloads"][:4]:
        shown = p.replace("\n", "\\n")
        out.write(f"      decoded: {shown[:200]}\n")


def check_lines(lines: Iterable[str], policy: Policy | None = None) -> list[CheckResult]:
    """Library form of `bastion check --json` (used by evaluation tools and tests)."""
    import io

    pol = policy or Policy.default()
    buf = io.StringIO()
    run_check(io.StringIO("".join(line if line.endswith("\n") else line + "\n"
                                  for line in lines)), buf, pol, as_json=True)
    return [CheckResult(json.loads(x)) for x in buf.getvalue().splitlines()]
