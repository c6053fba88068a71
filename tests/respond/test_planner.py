"""The responder plans: a verdict and its event in, commands out. No session, no root.

Each test states the whole plan, fallbacks included, the way mitmproxy's Playbook
tests state the commands a layer yields.
"""

from __future__ import annotations

import pytest

from bastion.contracts import (
    Alert,
    CallRef,
    Cut,
    Freeze,
    KillCall,
    KillSocketOwner,
    KillTree,
    Quarantine,
    Refuse,
    Terminate,
)
from bastion.events import Action, Event, EventKind, Severity, Verdict
from bastion.policy import Policy
from bastion.respond import Responder
from bastion.testing import FakeWatched

REASON = "t.rule: test verdict"


def _verdict(action: Action, **kw: object) -> Verdict:
    return Verdict(rule_id="t.rule", severity=Severity.HIGH, message="test verdict",
                   action=action, session_id="s-fake", **kw)  # type: ignore[arg-type]


def _event(kind: EventKind = EventKind.EXEC, **fields: object) -> Event:
    return Event(kind=kind, session_id="s-fake", fields=fields)


@pytest.fixture
def planner() -> Responder:
    return Responder(Policy.default().response)


@pytest.fixture
def view() -> FakeWatched:
    return FakeWatched(calls=[CallRef("c1", 1), CallRef("c2", 2)], pending={"c2"})


def test_nothing_asked_nothing_planned(planner, view):
    assert planner.plan(_verdict(Action.NONE), _event(), view) == []


def test_alert_only_records(planner, view):
    assert planner.plan(_verdict(Action.ALERT, call_id="c1"), _event(), view) == [Alert()]


def test_a_command_not_yet_run_is_refused_whatever_stops_it(planner, view):
    command = _event(EventKind.COMMAND)
    for action in (Action.DENY, Action.KILL, Action.CUT):
        assert planner.plan(_verdict(action, call_id="c2"), command, view) == [
            Refuse("command refused before it ran")], action


def test_deny_of_a_held_connection_is_refused_at_the_gateway(planner, view):
    connect = _event(EventKind.NET_CONNECT, **{"net.conn_id": "conn-1"})
    assert planner.plan(_verdict(Action.DENY, call_id="c1", pid=42), connect, view) == [
        Refuse("net.connect refused by the gateway")]
    query = _event(EventKind.DNS_QUERY)
    assert planner.plan(_verdict(Action.DENY), query, view) == [
        Refuse("dns.query refused by the gateway")]


def test_deny_that_comes_too_late_kills_the_offender(planner, view):
    # an exec already happened: nothing to refuse, the process tree of the call goes
    plan = planner.plan(_verdict(Action.DENY, call_id="c1", pid=42), _event(), view)
    assert plan == [KillCall("c1", otherwise=KillTree(42))]


def test_kill_aims_at_the_call_then_the_process_then_the_session(planner, view):
    assert planner.plan(_verdict(Action.KILL, call_id="c1", pid=42), _event(), view) == [
        KillCall("c1", otherwise=KillTree(42))]
    assert planner.plan(_verdict(Action.KILL, pid=42), _event(), view) == [KillTree(42)]
    assert planner.plan(_verdict(Action.KILL, call_id="c1"), _event(), view) == [
        KillCall("c1", otherwise=Terminate(f"{REASON} (offender unknown)"))]
    assert planner.plan(_verdict(Action.KILL), _event(), view) == [
        Terminate(f"{REASON} (offender unknown)")]


def test_kill_of_an_unattributed_connection_finds_the_socket_owner(planner, view):
    flow = _event(EventKind.NET_FLOW, **{"net.src_ip": "10.99.0.2", "net.src_port": 40000})
    assert planner.plan(_verdict(Action.KILL), flow, view) == [
        KillSocketOwner("10.99.0.2", 40000,
                        otherwise=Terminate(f"{REASON} (offender unknown)"))]


def test_cut_closes_the_connection_and_falls_back_to_a_kill(planner, view):
    flow = _event(EventKind.NET_FLOW, **{"net.conn_id": "conn-1"})
    assert planner.plan(_verdict(Action.CUT, call_id="c1", pid=42), flow, view) == [
        Cut("conn-1", otherwise=KillCall("c1", otherwise=KillTree(42)))]
    # the verdict's own evidence names the connection when the event does not
    named = _verdict(Action.CUT, pid=42, evidence={"net.conn_id": "conn-9"})
    assert planner.plan(named, _event(EventKind.NET_FLOW), view) == [
        Cut("conn-9", otherwise=KillTree(42))]
    # no connection to name: only the kill is left
    assert planner.plan(_verdict(Action.CUT, pid=42), _event(), view) == [KillTree(42)]


def test_freeze_terminates_when_it_cannot_freeze(planner, view):
    assert planner.plan(_verdict(Action.FREEZE), _event(EventKind.TELEMETRY), view) == [
        Freeze(otherwise=Terminate(f"{REASON} (the session could not be frozen)"))]


def test_terminate_and_quarantine_end_the_episode(planner, view):
    assert planner.plan(_verdict(Action.TERMINATE, call_id="c1"), _event(), view) == [
        Terminate(REASON)]
    assert planner.plan(_verdict(Action.QUARANTINE, call_id="c1"), _event(), view) == [
        Quarantine(REASON)]


def test_the_plan_depends_on_the_view_not_on_hidden_state(planner):
    started = FakeWatched(calls=[CallRef("c2", 2)])
    waiting = FakeWatched(calls=[CallRef("c2", 2)], pending={"c2"})
    verdict = _verdict(Action.KILL, call_id="c2", pid=7)
    assert planner.plan(verdict, _event(), started) == [KillCall("c2", otherwise=KillTree(7))]
    assert planner.plan(verdict, _event(), waiting) == [Refuse("command refused before it ran")]
    # planning twice changes nothing
    assert planner.plan(verdict, _event(), started) == planner.plan(verdict, _event(), started)
