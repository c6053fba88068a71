"""Engine: findings -> Verdicts with attribution, policy hash and the policy's action."""

from __future__ import annotations

import threading

from bastion import Policy
from bastion.engine import Engine, Finding, default_detectors
from bastion.events import Action, Event, EventKind, Severity
from bastion.rules import PackSource, RuleSetHolder, compile_sources

RULES = """
- requires_engine: 1
- rule: t.miner
  desc: miner binary
  condition: proc.name = xmrig
  output: "miner %proc.name"
  severity: critical
  categories: [mining]
  tags: [T1496]
- rule: t.curl
  desc: curl
  condition: proc.name = curl
  output: "curl ran"
  severity: medium
- rule: t.nc
  desc: netcat, always killed whatever the severity mapping says
  condition: proc.name = nc
  output: "nc ran"
  severity: low
  action: kill
"""


def _engine(policy: Policy | None = None, text: str = RULES) -> Engine:
    policy = policy or Policy.default()
    rs = compile_sources([PackSource("t", "t.yaml", text)], policy_hash="sha256:abc")
    return Engine(rs, policy.response, default_detectors(policy.rules.detectors))


def _exec(name: str, **kw: object) -> Event:
    return Event(EventKind.EXEC, session_id="s1", run_id="r1", episode_id="e1", step=3,
                 call_id="c3", pid=42, fields={"proc.name": name}, **kw)  # type: ignore[arg-type]


def test_verdict_carries_attribution_hash_and_mapped_action():
    engine = _engine()
    event = _exec("xmrig")
    [v] = engine.evaluate(event)
    assert (v.rule_id, v.severity, v.message) == ("t.miner", Severity.CRITICAL, "miner xmrig")
    assert v.action is Action.TERMINATE  # default policy: critical -> terminate
    assert (v.session_id, v.run_id, v.episode_id, v.step, v.call_id, v.pid) == (
        "s1", "r1", "e1", 3, "c3", 42)
    assert v.event_ids == (event.id,)
    assert v.policy_hash == "sha256:abc" == engine.policy_hash
    assert v.mitre == ("T1496",) and v.categories == ("mining",)
    assert engine.evaluate(_exec("ls")) == []


def test_policy_response_mapping_and_rule_override():
    policy = Policy.from_dict({"response": {"medium": "kill", "low": "none"}})
    engine = _engine(policy)
    assert engine.evaluate(_exec("curl"))[0].action is Action.KILL
    assert engine.evaluate(_exec("nc"))[0].action is Action.KILL  # the rule says kill


def test_detector_findings_become_verdicts_with_their_earlier_events():
    class Every:
        name = "every"
        kinds = frozenset({EventKind.FORK})

        def observe(self, event: Event) -> list[Finding]:
            return [Finding("d.every", Severity.HIGH, "fork seen", event_ids=("ev-earlier",))]

        def forget(self, session_id: str) -> None:
            pass

    engine = Engine(compile_sources([], policy_hash="h"), Policy.default().response, [Every()])
    fork = Event(EventKind.FORK, session_id="s", call_id="c1", pid=7)
    [v] = engine.evaluate(fork)
    assert v.rule_id == "d.every" and v.action is Action.KILL
    assert v.event_ids == ("ev-earlier", fork.id)
    assert engine.evaluate(_exec("ls")) == []  # the detector only sees forks
    stats = engine.statistics()
    assert stats.events == 2 and stats.verdicts == 1 and stats.detectors == ("every",)


def test_reload_swaps_rules_atomically_and_changes_the_hash():
    old = compile_sources([PackSource("t", "t.yaml", RULES)], policy_hash="h1")
    new = compile_sources([PackSource("t", "t.yaml", RULES.replace("= curl", "= wget"))],
                          policy_hash="h2")
    holder = RuleSetHolder(old)
    engine = Engine(holder, Policy.default().response)
    assert engine.evaluate(_exec("curl"))[0].policy_hash == "h1"
    results: list[list[str]] = []

    def hammer() -> None:
        for _ in range(2000):
            results.append([v.policy_hash + v.rule_id for v in engine.evaluate(_exec("curl"))])

    t = threading.Thread(target=hammer)
    t.start()
    holder.swap(new)
    t.join()
    # every evaluation saw one rule set: old -> a curl verdict under h1, new -> nothing
    assert all(r in ([], ["h1t.curl"]) for r in results)
    assert engine.evaluate(_exec("curl")) == []
    assert engine.evaluate(_exec("wget"))[0].policy_hash == "h2"


def test_closing_lifecycle_drops_detector_state():
    engine = _engine()
    for _ in range(5):
        engine.evaluate(Event(EventKind.RESOURCE, session_id="s1", pid=9, fields={
            "res.scope": "process", "res.cpu_cores": 1.0, "res.interval": 0.25,
            "proc.name": "x"}))
    engine.evaluate(Event(EventKind.LIFECYCLE, session_id="s1", fields={"life.state": "closing"}))
    # state restarted: one more sample is not enough to reach 1.5 s
    assert engine.evaluate(Event(EventKind.RESOURCE, session_id="s1", pid=9, fields={
        "res.scope": "process", "res.cpu_cores": 1.0, "res.interval": 0.25,
        "proc.name": "x"})) == []


def test_build_engine_compiles_each_policy_once(tmp_path):
    from bastion.engine.build import build_engine

    extra = tmp_path / "extra.yaml"
    extra.write_text(RULES)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("name: t\nrules:\n  packs: [mining]\n  files: [extra.yaml]\n")
    policy = Policy.load(policy_file)
    first, second = build_engine(policy), build_engine(policy)
    assert first.ruleset is second.ruleset  # compiled once
    assert first is not second  # detector state stays per session
    assert first.evaluate(_exec("nc"))[0].rule_id == "t.nc"
    extra.write_text(RULES.replace("= nc", "= ncat"))
    third = build_engine(policy)
    assert third.ruleset is not first.ruleset  # an edited rule file is recompiled
    assert third.evaluate(_exec("nc")) == [] and third.policy_hash != first.policy_hash
