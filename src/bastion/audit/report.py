"""The story of one episode, built from its audit records: a timeline of tool calls,
each with its command, the processes it started (as a tree, from the pid/ppid of
exec and fork events), the connections and DNS lookups it made, the verdicts charged
to it and the actions taken. ``render_terminal`` prints it with rich; ``html.py``
renders the same model as a self-contained page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..events import Action, Event, EventKind, Severity, Verdict
from ..textsafe import plain as _plain
from .reader import Record, episode_records

__all__ = [
    "CallView",
    "EpisodeReport",
    "ProcessNode",
    "build_report",
    "render_terminal",
    "terminal_safe",
]


@dataclass
class ProcessNode:
    pid: int
    ppid: int | None
    name: str
    cmdline: str
    wall: float
    exit_code: int | None = None
    children: list[ProcessNode] = field(default_factory=list)


@dataclass
class CallView:
    call_id: str
    step: int | None
    command: str = ""
    start: float | None = None
    end: float | None = None
    outcome: str | None = None
    exit_code: int | None = None
    processes: list[ProcessNode] = field(default_factory=list)  # roots of the tree
    connections: list[Event] = field(default_factory=list)  # net.* and dns.query
    files: list[Event] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    actions: list[Event] = field(default_factory=list)

    @property
    def worst(self) -> Severity | None:
        return max((v.severity for v in self.verdicts), default=None)


@dataclass
class EpisodeReport:
    episode_id: str
    run_ids: list[str]
    session_ids: list[str]
    policy_hashes: list[str]
    start: float
    end: float
    calls: list[CallView]
    session_verdicts: list[Verdict]  # not charged to a call
    session_actions: list[Event]
    lifecycle: list[Event]
    records: int
    policies: dict[str, str]

    @property
    def verdicts(self) -> list[Verdict]:
        return [v for c in self.calls for v in c.verdicts] + self.session_verdicts


_REFUSING = {Action.DENY, Action.TERMINATE, Action.QUARANTINE}

_NET_KINDS = {EventKind.NET_CONNECT, EventKind.NET_CLOSE, EventKind.NET_DROP,
              EventKind.NET_FLOW, EventKind.DNS_QUERY}


def build_report(state_dir: str | os.PathLike[str] | None, episode_id: str) -> EpisodeReport:
    records, policies = episode_records(state_dir, episode_id)
    return report_from_records(episode_id, records, policies)


def report_from_records(episode_id: str, records: list[Record],
                        policies: dict[str, str]) -> EpisodeReport:
    calls: dict[str, CallView] = {}
    procs: dict[tuple[str, int], ProcessNode] = {}  # (call, pid) -> node
    session_verdicts: list[Verdict] = []
    session_actions: list[Event] = []
    lifecycle: list[Event] = []
    runs: list[str] = []
    sessions: list[str] = []
    hashes: list[str] = []

    def call_for(call_id: str | None, step: int | None) -> CallView | None:
        if not call_id:
            return None
        view = calls.get(call_id)
        if view is None:
            view = calls[call_id] = CallView(call_id, step)
        if view.step is None:
            view.step = step
        return view

    walls = [r.wall for r in records if r.wall]
    for record in records:
        if record.run_id not in runs:
            runs.append(record.run_id)
        if record.type == "verdict":
            verdict = record.verdict()
            view = call_for(verdict.call_id, verdict.step)
            (view.verdicts if view else session_verdicts).append(verdict)
            continue
        if not record.is_event:
            continue
        event = record.event()
        if event.session_id and event.session_id not in sessions:
            sessions.append(event.session_id)
        view = call_for(event.call_id, event.step)
        _place(event, view, procs, lifecycle, session_actions, hashes)
    for (call_id, _pid), node in procs.items():
        parent = procs.get((call_id, node.ppid)) if node.ppid is not None else None
        if parent is not None and parent is not node:
            parent.children.append(node)
        else:
            calls[call_id].processes.append(node)
    for view in calls.values():
        if view.outcome is None and any(v.action in _REFUSING for v in view.verdicts):
            view.outcome = "denied"  # refused before it ran: the session wrote no call_end
    ordered = sorted(calls.values(), key=lambda c: (c.step if c.step is not None else -1,
                                                    c.start or 0.0))
    return EpisodeReport(
        episode_id=episode_id, run_ids=runs, session_ids=sessions, policy_hashes=hashes,
        start=min(walls, default=0.0), end=max(walls, default=0.0), calls=ordered,
        session_verdicts=session_verdicts, session_actions=session_actions,
        lifecycle=lifecycle, records=len(records), policies=policies,
    )


def _place(event: Event, view: CallView | None, procs: dict[tuple[str, int], ProcessNode],
           lifecycle: list[Event], session_actions: list[Event], hashes: list[str]) -> None:
    f: dict[str, Any] = dict(event.fields)
    kind = event.kind
    if kind is EventKind.LIFECYCLE:
        state = f.get("life.state")
        digest = f.get("policy_hash")
        if digest and digest not in hashes:
            hashes.append(digest)
        if view is None:
            lifecycle.append(event)
        elif state == "call_start":
            view.start = event.wall
            view.command = view.command or str(f.get("cmd.raw", ""))
        elif state == "call_end":
            view.end = event.wall
            view.outcome = f.get("outcome")
            view.exit_code = f.get("proc.exit_code")
        else:
            lifecycle.append(event)
    elif kind is EventKind.COMMAND:
        if view is not None:
            view.command = str(f.get("cmd.raw", view.command))
    elif kind is EventKind.ACTION:
        (view.actions if view else session_actions).append(event)
    elif view is None:
        return  # unattributed sensor events are in the log; the report follows calls
    elif kind in (EventKind.EXEC, EventKind.FORK) and event.pid is not None:
        key = (view.call_id, event.pid)
        node = procs.get(key)
        name = str(f.get("proc.name") or f.get("proc.comm") or "?")
        cmdline = str(f.get("proc.cmdline") or name)
        if node is None:
            procs[key] = ProcessNode(event.pid, event.ppid, name, cmdline, event.wall)
        elif kind is EventKind.EXEC:
            node.name, node.cmdline = name, cmdline
    elif kind is EventKind.EXIT and event.pid is not None:
        node = procs.get((view.call_id, event.pid))
        if node is not None:
            node.exit_code = f.get("proc.exit_code")
    elif kind in _NET_KINDS:
        view.connections.append(event)
    elif kind in (EventKind.FILE_WRITE, EventKind.FILE_DIFF, EventKind.FILE_READ):
        view.files.append(event)


def describe_connection(event: Event) -> str:
    f = event.fields
    if event.kind is EventKind.DNS_QUERY:
        return f"dns {f.get('dns.name', '?')} {f.get('dns.type', '')} -> " \
               f"{f.get('dns.decision', '?')}".strip()
    dst = f"{f.get('net.dst_ip', '?')}:{f.get('net.dst_port', '?')}"
    app = f.get("net.app") or f.get("net.proto") or ""
    name = f.get("net.sni") or f.get("net.host") or ""
    decision = f.get("net.decision", "")
    verb = event.kind.value.split(".", 1)[1]
    return " ".join(str(p) for p in (verb, dst, app, name, decision and f"-> {decision}") if p)


def describe_action(event: Event) -> str:
    f = event.fields
    return f"{f.get('action.name', '?')} {f.get('action.target', '')} " \
           f"(rule {f.get('action.rule', '?')})"


_SEV_STYLE = {Severity.INFO: "dim", Severity.LOW: "cyan", Severity.MEDIUM: "yellow",
              Severity.HIGH: "red", Severity.CRITICAL: "bold white on red"}


def _proc_label(node: ProcessNode) -> Text:
    text = Text(f"{node.pid} ", style="dim")
    text.append(node.name, style="bold")
    if node.cmdline and node.cmdline != node.name:
        text.append(f"  {node.cmdline[:120]}")
    if node.exit_code is not None:
        text.append(f"  exit {node.exit_code}", style="dim")
    return text


def _add_tree(tree: Tree, node: ProcessNode) -> None:
    branch = tree.add(_proc_label(node))
    for child in node.children:
        _add_tree(branch, child)


def terminal_safe(value: object) -> str:
    """Text from the trail as a terminal may show it: anything a writer put there
    (a call id, a command, a path) cannot start a new line, move the cursor or
    inject rich markup; control and other non-printable characters are escaped."""
    return escape(_plain(value))



def render_terminal(report: EpisodeReport, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]episode {terminal_safe(report.episode_id)}[/]  "
                  f"run {terminal_safe(', '.join(report.run_ids))}  "
                  f"session {terminal_safe(', '.join(report.session_ids) or '?')}  "
                  f"{report.records} records, {len(report.calls)} calls, "
                  f"{len(report.verdicts)} verdicts")
    if report.policy_hashes:
        console.print(f"policy {terminal_safe(', '.join(report.policy_hashes))}", style="dim")
    for call in report.calls:
        head = Text(f"step {call.step if call.step is not None else '?'} ", style="bold")
        head.append(f"[{_plain(call.call_id)}] ", style="dim")
        head.append(f"$ {_plain(call.command)}", style="green")
        if call.outcome:
            head.append(f"  -> {call.outcome}", style="dim" if call.outcome == "ok" else "red")
            if call.exit_code is not None:
                head.append(f" ({call.exit_code})", style="dim")
        if call.start and call.end:
            head.append(f"  {1000 * (call.end - call.start):.0f} ms", style="dim")
        tree = Tree(head)
        if call.processes:
            procs = tree.add("processes")
            for root in call.processes:
                _add_tree(procs, root)
        if call.connections:
            net = tree.add("network")
            for event in call.connections:
                net.add(describe_connection(event))
        if call.files:
            files = tree.add("files")
            for event in call.files:
                files.add(Text(f"{_plain(event.fields.get('file.op', '?'))} "
                               f"{_plain(event.fields.get('file.path', '?'))}"))
        for verdict in call.verdicts:
            tree.add(Text(f"verdict {verdict.severity} {_plain(verdict.rule_id)}: "
                          f"{_plain(verdict.message)} -> {verdict.action.value}",
                          style=_SEV_STYLE[verdict.severity]))
        for action in call.actions:
            tree.add(Text(f"action {describe_action(action)}", style="magenta"))
        console.print(tree)
    if report.session_verdicts or report.session_actions:
        table = Table("severity", "rule", "message", "action", title="not charged to a call")
        for verdict in report.session_verdicts:
            table.add_row(str(verdict.severity), terminal_safe(verdict.rule_id), terminal_safe(verdict.message),
                          verdict.action.value)
        for action in report.session_actions:
            table.add_row("", "", describe_action(action), "")
        console.print(table)
    ends = [e for e in report.lifecycle if e.fields.get("life.state") in
            ("terminated", "closing", "closed")]
    for event in ends:
        reason = event.fields.get("reason")
        console.print(f"session {terminal_safe(event.fields.get('life.state'))}"
                      + (f": {terminal_safe(reason)}" if reason else ""), style="dim")
