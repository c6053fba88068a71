"""An ssh client allowed to one host whose ``Include``d config file is written after
ssh started (held-out 4, attacks_held_out: ``ssh_include_written_after_exec``): judged
at its exec and connect before the file existed, caught when its call ends because its
configs are read again then (or at its connect, when the file is there by then); an
honest config change after start is not a finding."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bastion import Session
from bastion.events import Action
from bastion.lab import Lab

from .test_egress import RELAY, _trusted_key, policy

SSH_ALLOWED = {"domain": RELAY, "port": 22, "protocol": "ssh"}
CONFIG = ("printf 'Host r\\n HostName relay.allowed.lab.test\\n User root\\n IdentityFile /workspace/id\\n"
          " StrictHostKeyChecking no\\n UserKnownHostsFile /dev/null\\n BatchMode yes\\n"
          " Include /workspace/.late\\n' > /workspace/c2; ")


@pytest.mark.parametrize("late,expected", [
    ("RemoteForward 9204 localhost:22", True),
    ("ServerAliveInterval 30", False),
])
def test_include_written_after_ssh_started(lab: Lab, make_session: Callable[..., Session],
                                           late: str, expected: bool) -> None:
    session = make_session(policy(SSH_ALLOWED), lab=True)
    _trusted_key(lab, session)
    r = session.exec(CONFIG + f"(sleep 0.05; printf '{late}\\n' > /workspace/.late) & "
                     "timeout 10 ssh -F /workspace/c2 -f r 'sleep 30'; sleep 0.2; echo rc=$?",
                     call_id="c1", step=1, timeout=30)
    session.settle()
    # whichever look reads the file first reports it: the connect's (the gateway waits
    # for it) when the file is there by then, else the call end's
    hits = [v for v in session.verdicts if v.rule_id in (
        "tunnels.ssh_forward_exec", "tunnels.ssh_config_changed_after_start")]
    if not expected:
        assert not [v for v in session.verdicts if v.rule_id.startswith("tunnels.")], (
            r.stdout + r.stderr, session.verdicts)
        return
    assert hits, (r.stdout + r.stderr, session.verdicts)
    assert {v.call_id for v in hits} == {"c1"}
    assert hits[0].action in (Action.KILL, Action.TERMINATE, Action.CUT)
    assert "ssh_forward_remote" in hits[0].evidence["features"]
