"""``Responder``: carries out the action a verdict calls for. Never detects.

It returns the verdict with the action *actually taken* (which may differ from the
one asked for: a kill with nothing left to kill is recorded as such, a cut without a
gateway escalates to a kill) and one ``action`` event per thing it did, which the
session records in the audit trail.

Escalation is always towards containment (fail closed): when the asked-for action
cannot be carried out, the responder does the next stronger one that can.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import BastionError
from ..events import Action, Event, EventKind, Verdict
from ..policy.response import ResponsePolicy
from ..sensors.procfs import read_cgroup
from ..sensors.sockets import socket_owner
from .kill import kill_tree
from .quarantine import quarantine
from .webhook import WebhookSender

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["ConnectionCutter", "Responder"]

# Actions that end or stop work in the session: nothing left to do once it has ended.
_CONTAINING = (Action.KILL, Action.CUT, Action.FREEZE, Action.TERMINATE, Action.QUARANTINE)
_REFUSABLE = (EventKind.NET_CONNECT, EventKind.DNS_QUERY)


class ConnectionCutter(Protocol):
    """The gateway's hook for closing one live connection; True if it was open."""

    def cut(self, conn_id: str) -> bool: ...


class Responder:
    """One per host (or per session); holds no per-session state."""

    def __init__(
        self,
        response: ResponsePolicy,
        *,
        cutter: ConnectionCutter | None = None,
        quarantine_root: Path | None = None,
    ) -> None:
        self._cutter = cutter
        self._quarantine_root = quarantine_root
        self._webhook = WebhookSender(response.webhook) if response.webhook else None

    def set_cutter(self, cutter: ConnectionCutter | None) -> None:
        self._cutter = cutter

    def close(self) -> None:
        if self._webhook is not None:
            self._webhook.close()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait for queued alerts to be delivered (or to fail)."""
        if self._webhook is not None:
            self._webhook.flush(timeout)

    # -- the protocol -----------------------------------------------------------------

    def respond(self, verdict: Verdict, session: Session) -> tuple[Verdict, list[Event]]:
        asked = verdict.action
        if asked is Action.NONE:
            return verdict, []
        if verdict.pid is None and verdict.call_id is None and asked in _CONTAINING:
            verdict = self._attribute(verdict, session)
        taken, detail, ok = self._act(verdict, session, asked)
        events = [self._event(session, verdict, taken, detail, ok)]
        if self._webhook is not None:
            self._alert(verdict.with_action(taken), session)
        if taken is not asked or detail:
            verdict = replace(verdict, action=taken,
                              evidence={**verdict.evidence, "response": detail})
        return verdict, events

    def _act(self, verdict: Verdict, session: Session, asked: Action) -> tuple[Action, str, bool]:
        if asked in _CONTAINING and (session.closed or session.ended):
            return Action.NONE, f"not carried out: {session.ended or 'session closed'}", False
        handler = {
            Action.ALERT: self._do_alert,
            Action.DENY: self._do_deny,
            Action.CUT: self._do_cut,
            Action.KILL: self._do_kill,
            Action.FREEZE: self._do_freeze,
            Action.TERMINATE: self._do_terminate,
            Action.QUARANTINE: self._do_quarantine,
        }[asked]
        return handler(verdict, session)

    # -- actions ----------------------------------------------------------------------

    def _do_alert(self, verdict: Verdict, session: Session) -> tuple[Action, str, bool]:
        if self._webhook is None:
            return Action.ALERT, "recorded (no webhook configured)", True
        return Action.ALERT, f"sent to {self._webhook.url}", True

    def _do_deny(self, verdict: Verdict, session: Session) -> tuple[Action, str, bool]:
        if self._is_command(verdict, session):
            return Action.DENY, "command refused before it ran", True
        event = _event_of(session, verdict.event_ids[-1]) if verdict.event_ids else None
        if event is not None and event.kind in _REFUSABLE:
            # the gateway holds the connection / query until the verdict is back and
            # refuses it on a deny: nothing reached the destination
            return Action.DENY, f"{event.kind.value} refused by the gateway", True
        # too late to refuse: whatever the event describes is already running
        return self._do_kill(self._attribute(verdict, session)
                             if verdict.pid is None and verdict.call_id is None else verdict,
                             session)

    def _do_cut(self, verdict: Verdict, session: Session) -> tuple[Action, str, bool]:
        conn_id = verdict.evidence.get("net.conn_id") or self._field(verdict, session,
                                                                     "net.conn_id")
        if self._cutter is not None and conn_id and self._cutter.cut(str(conn_id)):
            return Action.CUT, f"connection {conn_id} closed", True
        # cannot close the connection: stop the process that holds it
        why = "no gateway" if self._cutter is None else f"connection {conn_id!r} not open"
        taken, detail, ok = self._do_kill(verdict, session)
        return taken, f"cut impossible ({why}); {detail}", ok

    def _do_kill(self, verdict: Verdict, session: Session) -> tuple[Action, str, bool]:
        if self._is_command(verdict, session):
            return Action.DENY, "command refused before it ran", True
        if verdict.call_id and session.kill_call(verdict.call_id):
            return Action.KILL, f"killed every process of call {verdict.call_id}", True
        cgroup = session.sandbox.cgroup if session.sandbox is not None else None
        if verdict.pid and cgroup is not None:
            killed = kill_tree(verdict.pid, cgroup.pids, session.owns_cgroup)
            if killed:
                return Action.KILL, f"killed pids {killed}", True
            return Action.KILL, f"pid {verdict.pid} already gone", True
        # nothing identifies the offender: stop everything
        session.terminate(f"{verdict.rule_id}: {verdict.message} (offender unknown)")
        return Action.TERMINATE, "no process or call to kill; session terminated", True

    def _do_freeze(self, verdict: Verdict, session: Session) -> tuple[Action, str, bool]:
        try:
            session.freeze()
        except BastionError as exc:
            session.terminate(f"{verdict.rule_id}: freeze failed ({exc})")
            return Action.TERMINATE, f"freeze failed ({exc}); session terminated", True
        return Action.FREEZE, "every process of the session frozen", True

    def _do_terminate(self, verdict: Verdict, session: Session) -> tuple[Action, str, bool]:
        session.terminate(f"{verdict.rule_id}: {verdict.message}")
        return Action.TERMINATE, "session terminated", True

    def _do_quarantine(self, verdict: Verdict, session: Session) -> tuple[Action, str, bool]:
        root = self._quarantine_root or session.host.state.root
        session.freeze()
        cgroup = session.sandbox.cgroup if session.sandbox is not None else None
        pids = cgroup.pids() if cgroup is not None else []
        try:
            dest = quarantine(root=Path(root), session_id=session.session_id,
                              workspace=session.workspace, pids=pids,
                              verdict=verdict.to_dict())
        finally:
            session.terminate(f"{verdict.rule_id}: {verdict.message} (quarantined)")
        return Action.QUARANTINE, f"evidence kept in {dest}; session terminated", True

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def _is_command(verdict: Verdict, session: Session) -> bool:
        """True for a call that has not started yet (a command verdict): the session
        refuses to run it, which is the only kill that leaves nothing behind."""
        call = session.calls.get(verdict.call_id or "")
        return call is not None and call.cgroup is None

    def _attribute(self, verdict: Verdict, session: Session) -> Verdict:
        """A connection verdict without a process (the gateway knows the connection,
        not who opened it): find the session process whose socket it is, and charge
        the verdict to that process and its call, so the right thing is stopped and
        the right call is told."""
        cgroup = session.sandbox.cgroup if session.sandbox is not None else None
        ip = self._field(verdict, session, "net.src_ip")
        port = self._field(verdict, session, "net.src_port")
        if cgroup is None or session.closed or not ip or not port:
            return verdict
        pid = socket_owner(cgroup.pids(), str(ip), int(port))
        if pid is None:
            return verdict
        call = session.call_for_cgroup(read_cgroup(pid) or "")
        return replace(verdict, pid=pid, call_id=call.call_id if call else None,
                       step=call.step if call else None,
                       evidence={**verdict.evidence, "attributed_by": "socket owner"})

    @staticmethod
    def _field(verdict: Verdict, session: Session, name: str) -> Any:
        event = _event_of(session, verdict.event_ids[-1]) if verdict.event_ids else None
        return event.fields.get(name) if event is not None else None

    def _event(self, session: Session, verdict: Verdict, taken: Action, detail: str,
               ok: bool) -> Event:
        call = session.calls.get(verdict.call_id or "")
        return session.event(EventKind.ACTION, call=call, pid=verdict.pid, **{
            "action.name": taken.value,
            "action.target": verdict.call_id or (str(verdict.pid) if verdict.pid else
                                                 session.session_id),
            "action.rule": verdict.rule_id,
            "action.verdict": verdict.id,
            "action.ok": ok,
            "action.detail": detail,
        })

    def _alert(self, verdict: Verdict, session: Session) -> None:
        assert self._webhook is not None
        payload = {"type": "bastion.verdict", "verdict": verdict.to_dict(),
                   "session": session.session_id, "run_id": session.run_id,
                   "episode_id": session.episode_id}

        def failed(message: str) -> None:
            with contextlib.suppress(Exception):  # a failing ingest already ended the session
                session.ingest(session.event(EventKind.TELEMETRY, **{
                    "telemetry.sensor": "webhook", "telemetry.reason": message}))

        self._webhook.send(payload, failed)


def _event_of(session: Session, event_id: str) -> Event | None:
    # the evaluated event is the session's latest one (ingest appends before evaluating)
    for event in reversed(session.events[-64:]):
        if event.id == event_id:
            return event
    return None
