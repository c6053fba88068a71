"""``Responder``: plans what a verdict calls for. Never detects, never acts.

``plan(verdict, event, view)`` returns commands (``bastion.contracts``); the session
carries them out on its own executor once the verdict is durable, and records one
``action`` event per command with what was actually done. The plan is a pure function
of the verdict, the event that drew it and a read-only view of the session, so it is
tested "verdict in, commands out", without root.

Escalation is always towards containment (fail closed): every command that may turn
out impossible carries, as ``otherwise``, the next stronger one that can be done —
a cut without a gateway kills the process behind the connection, a kill with no
process or call to aim at terminates the session, a failed freeze terminates.
"""

from __future__ import annotations

from ..contracts import (
    Alert,
    Command,
    Cut,
    Freeze,
    KillCall,
    KillSocketOwner,
    KillTree,
    Quarantine,
    Refuse,
    Terminate,
    Watched,
)
from ..events import Action, Event, EventKind, Verdict
from ..policy.response import ResponsePolicy

__all__ = ["Responder"]

# Events the gateway holds until their verdict is back: a deny refuses them outright.
_REFUSABLE = (EventKind.NET_CONNECT, EventKind.DNS_QUERY)


class Responder:
    """The default ``ResponsePlanner``. Holds no per-session state."""

    def __init__(self, response: ResponsePolicy) -> None:
        self._response = response

    def plan(self, verdict: Verdict, event: Event, view: Watched) -> list[Command]:
        asked = verdict.action
        reason = f"{verdict.rule_id}: {verdict.message}"
        if asked is Action.NONE:
            return []
        if asked is Action.ALERT:
            return [Alert()]
        if asked is Action.TERMINATE:
            return [Terminate(reason)]
        if asked is Action.QUARANTINE:
            return [Quarantine(reason)]
        if asked is Action.FREEZE:
            return [Freeze(otherwise=Terminate(f"{reason} (the session could not be frozen)"))]
        if self._pending(verdict, view):
            # a command verdict: the call has not started, refusing it stops everything
            return [Refuse("command refused before it ran")]
        if asked is Action.DENY and event.kind in _REFUSABLE:
            return [Refuse(f"{event.kind.value} refused by the gateway")]
        kill = self._kill(verdict, event, reason)
        if asked is Action.CUT:
            conn_id = verdict.evidence.get("net.conn_id") or event.fields.get("net.conn_id")
            if conn_id:
                return [Cut(str(conn_id), otherwise=kill)]
        # KILL, a CUT with no connection to name, or a DENY that came too late to refuse
        # (what the event describes already runs): stop the offender
        return [kill]

    @staticmethod
    def _pending(verdict: Verdict, view: Watched) -> bool:
        return verdict.call_id is not None and view.call_pending(verdict.call_id)

    @staticmethod
    def _kill(verdict: Verdict, event: Event, reason: str) -> Command:
        """The narrowest kill that stops the offender, escalating when it cannot."""
        last = Terminate(f"{reason} (offender unknown)")
        if verdict.pid is not None:
            target: Command = KillTree(verdict.pid)
        else:
            ip, port = event.fields.get("net.src_ip"), event.fields.get("net.src_port")
            # a connection the gateway could not charge to a process: find its socket
            target = (KillSocketOwner(str(ip), int(port), otherwise=last) if ip and port
                      else last)
        if verdict.call_id is not None:
            return KillCall(verdict.call_id, otherwise=target)
        return target
