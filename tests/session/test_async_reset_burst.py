"""A trainer's reset is a burst: N sessions created at once. Their policy's packs are
compiled once for the burst, not once per session racing the others (each compile is
hundreds of milliseconds of CPU under the GIL)."""

from __future__ import annotations

import threading

import pytest

from bastion.engine import build
from bastion.policy import Policy


def test_a_burst_of_sessions_compiles_the_policy_once(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.from_yaml("name: burst-once\n", source="<test>")
    compiles: list[str] = []
    real = build.load_ruleset

    def counted(p: Policy) -> object:
        compiles.append(p.name)
        return real(p)

    monkeypatch.setattr(build, "load_ruleset", counted)
    monkeypatch.setattr(build, "_cache", build.OrderedDict())
    start = threading.Barrier(8)
    got: list[object] = []

    def create() -> None:
        start.wait()
        got.append(build.ruleset_for(policy))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got) == 8 and all(r is got[0] for r in got)  # one shared RuleSet
    assert compiles == ["burst-once"]
