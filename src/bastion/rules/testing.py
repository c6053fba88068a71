"""Run the test cases kept beside each rule (``tests: {match: [...], no_match: [...]}``).

A string case is a command: it is analysed exactly as a submitted tool call is and
becomes a ``command`` event. A mapping case is an event: ``kind`` (default ``exec``)
plus field values. Cases go through ``RuleSet.match`` (index included), so a rule whose
kinds or guard are wrong fails its own tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..analysis import analyze_command
from ..events import ATTRIBUTE_FIELDS, Event, EventKind
from ..sensors.procfs import process_name
from .ruleset import RuleSet

__all__ = ["TEST_GRADER_POLICY", "RuleTestFailure", "event_for_case", "run_rule_tests"]

# The grader the packs' own test cases assume (reward-integrity rules are bound to the
# policy's grader): protected /grader and ./tests, hidden /answers.
TEST_GRADER_POLICY = {"sandbox": {"protected": ["/grader", "tests"], "hidden": ["/answers"]}}


@dataclass(frozen=True)
class RuleTestFailure:
    rule_id: str
    expected: str  # "match" or "no_match"
    case: Any
    matched: tuple[str, ...]

    def __str__(self) -> str:
        return (f"{self.rule_id}: expected {self.expected} for {self.case!r}; "
                f"rules that matched: {list(self.matched)}")


def command_event(cmd: str, **attribution: Any) -> Event:
    return Event(kind=EventKind.COMMAND, fields=analyze_command(cmd), **attribution)


def event_for_case(case: str | Mapping[str, Any]) -> Event:
    if isinstance(case, str):
        return command_event(case)
    fields = dict(case)
    kind = EventKind(fields.pop("kind", "exec"))
    # Attribution (session.id, call.id...) is the event's context, not a field:
    # `{kind: command, cmd.raw: "sudo -i", session.id: s1}` is that command, analysed,
    # inside a session.
    context = {ATTRIBUTE_FIELDS[k]: fields.pop(k) for k in list(fields)
               if k in ATTRIBUTE_FIELDS and k not in ("kind", "proc.pid")}
    if kind is EventKind.COMMAND and set(fields) == {"cmd.raw"}:
        return command_event(str(fields["cmd.raw"]), **context)
    if kind is EventKind.EXEC:
        args = fields.get("proc.args")
        if args is not None and "proc.cmdline" not in fields:
            fields["proc.cmdline"] = " ".join(args)
        if "proc.exe" in fields and "proc.name" not in fields:
            # named as the process sensor names it (a multi-call binary by its applet)
            exe = str(fields["proc.exe"])
            fields["proc.name"] = process_name(exe.rsplit("/", 1)[-1][:15], exe,
                                               [str(a) for a in args or ()])
    pid = fields.pop("proc.pid", None)
    return Event(kind=kind, fields=fields, pid=pid, **context)


def run_rule_tests(ruleset: RuleSet, rule_ids: set[str] | None = None) -> list[RuleTestFailure]:
    failures: list[RuleTestFailure] = []
    for rule in ruleset.rules:
        if not rule.enabled or (rule_ids is not None and rule.id not in rule_ids):
            continue
        for expected in ("match", "no_match"):
            for case in rule.tests.get(expected, []):
                matched = tuple(ruleset.matching_rule_ids(event_for_case(case)))
                if (rule.id in matched) != (expected == "match"):
                    failures.append(RuleTestFailure(rule.id, expected, case, matched))
    return failures
