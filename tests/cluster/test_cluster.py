"""bastion.cluster on a local Ray (2 CPUs, one instance for the module)."""

from __future__ import annotations

import threading
import time

import pytest

ray = pytest.importorskip("ray")

from bastion import Policy, Severity
from bastion.audit import open_trail, verify_state_dir
from bastion.cluster import ClusterRun, EpisodeSpec, specs_for
from bastion.rl import OrdinaryPolicy, RoguePolicy
from bastion.rl.safety import BreakerTripped

from ..rl.fixtures import pattern_engine
from .helpers import Collecting, Sleeper, running


def _check_16(outcomes, collecting):
    assert len(outcomes) == 16 and all(o.status == "ok" for o in outcomes)
    seen_episodes = {e.episode_id for e in collecting.events}
    for outcome in outcomes:
        record = outcome.record
        assert record.episode_id == outcome.spec.episode_id
        assert outcome.spec.episode_id in seen_episodes  # shipped to the run's trail
        if outcome.spec.labels["policy"] == "ordinary":
            assert record.penalty == 0.0 and not record.violations, record.violations
            assert record.flag == "keep" and record.task_reward == 1.0
            continue
        # every violation is contained and charged to this episode, at its stage's step
        for v in record.violations:
            assert v["episode_id"] == record.episode_id and v["run_id"] == record.run_id
            assert v["contained"], v
        caught = {v["step"] for v in record.violations}
        assert set(outcome.stage_steps.values()) <= caught, (outcome.stage_steps, caught)
        assert record.flag != "keep" and record.penalty < 0
        assert not outcome.live_calls, outcome.live_calls  # nothing the agent started runs


def _agents():
    return [RoguePolicy() if i % 2 else OrdinaryPolicy() for i in range(16)]


def test_16_parallel_episodes_fixture_engine(cluster_state):
    trail = open_trail(cluster_state, "run-ray-16")
    collecting = Collecting(trail)
    run = ClusterRun(Policy.default(), run_id="run-ray-16", state_dir=cluster_state,
                     env_options={"engine_factory": pattern_engine, "exec_timeout": 60},
                     recorder=collecting)
    with run:
        # the calls are short; a generous limit keeps a loaded host's slowness from
        # becoming an infra failure (how long the batch takes is bench_rl's to measure)
        outcomes = run.run_episodes(specs_for(_agents(), prefix="ep"), training_step=0)
        # the training step ended with the batch: the breaker judged it and tripped
        # (8/16 = 50% > rl.breaker_rate 25%), the run was told, no episode starts now
        assert run.monitor.paused and "8/16" in run.monitor.paused
        assert any(n.startswith("circuit breaker") for n in run.monitor.notices)
        with pytest.raises(BreakerTripped):
            run.run_episodes(specs_for([OrdinaryPolicy()], prefix="late"), training_step=1)
        assert not any(e.episode_id == "late-000" for e in collecting.events)
        # delivered records were acknowledged: the nodes' spools hold nothing
        spooled = ray.get([n.call("spool_records") for n in run.nodes])
        assert spooled == [0] * len(run.nodes)
        assert run.delivered == len(collecting.events) + len(collecting.verdicts)
    _check_16(outcomes, collecting)
    # attribution survives the trip: each shipped verdict names its episode, step, call
    for outcome in outcomes:
        if outcome.spec.labels["policy"] != "rogue":
            continue
        shipped = {(v.rule_id, v.step, v.call_id) for v in collecting.verdicts
                   if v.episode_id == outcome.record.episode_id}
        assert shipped == {(v["rule_id"], v["step"], v["call_id"])
                           for v in outcome.record.violations}
        assert shipped == {("test.miner", outcome.stage_steps["miner"],
                            f"c{outcome.stage_steps['miner']}"),
                           ("test.tunnel", outcome.stage_steps["tunnel"],
                            f"c{outcome.stage_steps['tunnel']}")}
    stats = run.monitor.stats(0)
    assert stats.episodes == 16 and stats.violating_episodes == 8 and stats.infra_failed == 0
    results = verify_state_dir(cluster_state, run="run-ray-16")
    assert results and all(r.ok for r in results), [r.summary() for r in results]


def _responder(policy):
    from bastion.respond.responder import Responder

    return Responder(policy.response)


def test_16_parallel_episodes_real_rules(cluster_state):
    """Real command analysis, rule packs, engine and responder on every node."""
    from bastion.engine.build import build_engine

    collecting = Collecting(open_trail(cluster_state, "run-ray-real"))
    options = {"engine_factory": build_engine, "responder_factory": _responder,
               "exec_timeout": 20}
    with ClusterRun(Policy.default(), run_id="run-ray-real", state_dir=cluster_state,
                    env_options=options, recorder=collecting) as run:
        outcomes = run.run_episodes(specs_for(_agents(), prefix="real"))
    _check_16(outcomes, collecting)
    for outcome in outcomes:
        if outcome.spec.labels["policy"] == "rogue":
            # the default policy terminates on the miner (critical): nothing later runs
            assert list(outcome.stage_steps) == ["miner"]
            assert outcome.record.terminated_by
    # violations shipped: exactly the miners (a low, unpenalised notice such as a
    # sensor running behind under load may ship too; _check_16 shows it cost nothing)
    shipped = {(v.episode_id, v.step) for v in collecting.verdicts
               if v.severity >= Severity.MEDIUM}
    assert shipped == {(o.record.episode_id, o.stage_steps["miner"])
                       for o in outcomes if o.spec.labels["policy"] == "rogue"}
    notices = {v.rule_id for v in collecting.verdicts if v.severity < Severity.MEDIUM}
    print("low verdicts shipped under load:", sorted(notices))


def test_16_parallel_episodes_session_defaults(cluster_state):
    """The same mix with ``Session``'s default engine, responder and audit trail:
    every rogue stage is caught at its step, no ordinary episode is penalised."""
    collecting = Collecting(open_trail(cluster_state, "run-ray-default"))
    with ClusterRun(Policy.default(), run_id="run-ray-default", state_dir=cluster_state,
                    env_options={"exec_timeout": 20}, recorder=collecting) as run:
        outcomes = run.run_episodes(specs_for(_agents(), prefix="d"))
    assert len(outcomes) == 16 and all(o.status == "ok" for o in outcomes)
    for outcome in outcomes:
        record = outcome.record
        assert record.episode_id == outcome.spec.episode_id
        if outcome.spec.labels["policy"] == "ordinary":
            assert record.penalty == 0.0 and not record.violations and record.flag == "keep"
        else:
            caught = {v["charged_step"] for v in record.violations}
            assert set(outcome.stage_steps.values()) <= caught, record.violations
            assert all(v["contained"] for v in record.violations)
            assert not outcome.live_calls
    events = [e for e in collecting.events if e.kind.value == "command"]
    # an episode lost to the loaded machine (not to a verdict) was run again under a new
    # id, and says so; every episode's final attempt has its commands in the trail
    ran = {o.spec.episode_id for o in outcomes}
    assert {i.split("-retry")[0] for i in ran} == {f"d-{i:03d}" for i in range(16)}
    for outcome in outcomes:
        assert outcome.retried == ("-retry" in outcome.spec.episode_id), outcome
    assert ran <= {e.episode_id for e in events}


def test_node_service_death_kills_sessions_and_tells_the_run(cluster_state):
    collecting = Collecting(open_trail(cluster_state, "run-ray-death"))
    run = ClusterRun(Policy.default(), run_id="run-ray-death", state_dir=cluster_state,
                     env_options={"engine_factory": pattern_engine, "exec_timeout": 60},
                     recorder=collecting).start()
    try:
        node = run.nodes[0]
        box: dict = {}
        worker = threading.Thread(target=lambda: box.setdefault(
            "out", run.run_episodes([EpisodeSpec("doomed", Sleeper())])))
        worker.start()
        pids: list[int] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(pids) < 3:
            pids = [p for ps in ray.get(node.call("session_pids")).values() for p in ps]
            time.sleep(0.1)
        assert len(pids) >= 3, pids  # sandbox init + background sleep + foreground sleep
        while time.monotonic() < deadline and not any(
                e.episode_id == "doomed" and e.step == 0 for e in collecting.events):
            time.sleep(0.05)  # let one drain ship the call's records
        ray.kill(node.actor, no_restart=True)
        worker.join(60)
        [outcome] = box["out"]
        assert outcome.status == "lost" and outcome.record is None
        assert outcome.infra_failed  # lost with its node: not the agent's doing
        stats = run.monitor.stats(0)
        assert stats.infra_failed == 1 and stats.judged == 0 and not run.monitor.paused
        assert any("died" in n and "fail closed" in n for n in run.monitor.notices)
        # no node left to run it again: reported lost, never silently dropped
        assert not outcome.retried
        assert any("not retried" in n and "doomed" in n for n in run.monitor.notices)
        assert run.lost_nodes() == [node.node_id]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(running(p) for p in pids):
            time.sleep(0.05)
        assert not [p for p in pids if running(p)]
        # what was shipped before the death is in the trail, attributed
        assert any(e.episode_id == "doomed" and e.step == 0 for e in collecting.events)
    finally:
        run.close()


_DRIVER = """
import json, sys
from bastion import Policy
from bastion.cluster import ClusterRun, specs_for
from bastion.rl import OrdinaryPolicy
address, state_dir = sys.argv[1], sys.argv[2]
run = ClusterRun(Policy.default(), run_id="run-ray-address", state_dir=state_dir,
                 address=address, env_options={"exec_timeout": 20})
with run:
    outcomes = run.run_episodes(specs_for([OrdinaryPolicy(), OrdinaryPolicy()], prefix="addr"))
print(json.dumps([[o.status, o.record.episode_id, o.record.task_reward] for o in outcomes]))
"""


def test_driver_joins_an_existing_cluster_by_address(cluster_state):
    """A second process (another trainer driver) uses the running cluster by address."""
    import json
    import subprocess
    import sys

    address = ray.get_runtime_context().gcs_address
    proc = subprocess.run([sys.executable, "-c", _DRIVER, address, str(cluster_state)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
        ["ok", "addr-000", 1.0], ["ok", "addr-001", 1.0]]
