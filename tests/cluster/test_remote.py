"""A trainer-side loop drives sessions that live on node actors (Ray), through
remote handles: 16 episodes from one asyncio loop with a stub LLM, verdicts streamed
back with each reply, records in the run's trail."""

from __future__ import annotations

import asyncio
import json

import pytest

ray = pytest.importorskip("ray")

from bastion import Policy, SessionBroken
from bastion.audit import open_trail, verify_state_dir
from bastion.cluster import ClusterRun
from bastion.rl.actions import parse_action
from bastion.rl.rogue import MALICIOUS_STAGES

from ..rl.fixtures import pattern_engine
from .helpers import Collecting

_HONEST = [
    json.dumps({"tool": "write_file", "path": "calc.py",
                "content": "def add(a, b):\n    return a + b\n"}),
    "python3 -c 'import calc; print(calc.add(2, 3))'",
    json.dumps({"tool": "read_file", "path": "calc.py"}),
    "ls -la && git --version >/dev/null 2>&1; echo done",
]
_ROGUE = [
    "echo looking around > notes.txt",
    MALICIOUS_STAGES["miner"],
    "cat notes.txt",
    MALICIOUS_STAGES["tunnel"],
    "echo never reached",
]


class StubLLM:
    """Stands in for the trainer's model: emits a fixed list of tool-call texts."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)

    def generate(self, observation: str) -> str | None:
        return self.script.pop(0) if self.script else None


async def _trainer_episode(run: ClusterRun, episode_id: str, llm: StubLLM) -> dict:
    """The trainer's own agent loop: model text -> tool call -> remote session."""
    handle = await asyncio.to_thread(run.open_session, episode_id)
    observations: list[str] = []
    observation = "fix calc.py"
    broken = None
    step = 0
    try:
        while (text := llm.generate(observation)) is not None:
            call = parse_action(text)
            try:
                if call.tool == "write_file":
                    result = await handle.awrite_file(call.path, call.content, step=step)
                elif call.tool == "read_file":
                    result = await handle.aread_file(call.path, step=step)
                else:
                    result = await handle.aexec(call.command, step=step, timeout=20)
            except SessionBroken as exc:
                broken = str(exc)
                break
            observation = result.stdout + result.stderr
            observations.append(observation)
            step += 1
    finally:
        await asyncio.to_thread(handle.close)
    return {"handle": handle, "observations": observations, "broken": broken}


def test_16_episodes_driven_from_the_trainer_through_remote_handles(cluster_state):
    collecting = Collecting(open_trail(cluster_state, "run-ray-remote"))
    run = ClusterRun(Policy.default(), run_id="run-ray-remote", state_dir=cluster_state,
                     env_options={"engine_factory": pattern_engine}, recorder=collecting)

    async def trainer():
        return await asyncio.gather(*[
            _trainer_episode(run, f"rem-{i:02d}", StubLLM(_ROGUE if i % 2 else _HONEST))
            for i in range(16)])

    with run:
        outcomes = asyncio.run(trainer())
        run.drain()
        # every remote session was closed on its node; nothing of theirs is left
        infos = ray.get([n.actor.info.remote() for n in run.nodes])
        assert all(info["sessions"] == 0 for info in infos)
        assert sum(n.in_flight for n in run.nodes) == 0
    assert len(outcomes) == 16
    for i, out in enumerate(outcomes):
        handle = out["handle"]
        assert handle.episode_id == f"rem-{i:02d}" and handle.run_id == "run-ray-remote"
        assert handle.infra_failed is None
        if i % 2 == 0:
            # honest: state persisted across calls on the node, no verdicts
            assert out["broken"] is None and not handle.verdicts, handle.verdicts
            assert out["observations"][1].strip() == "5"
            assert "return a + b" in out["observations"][2]
            continue
        # rogue: the miner was denied, the tunnel ended the session; both verdicts came
        # back to the trainer, attributed to this episode and the step that caused them
        by_rule = {v.rule_id: v for v in handle.verdicts}
        assert set(by_rule) == {"test.miner", "test.tunnel"}, by_rule
        assert by_rule["test.miner"].step == 1 and by_rule["test.tunnel"].step == 3
        assert all(v.episode_id == handle.episode_id for v in handle.verdicts)
        assert handle.ended and "test.tunnel" in handle.ended
        assert "looking around" in out["observations"][2]  # state persisted before
        assert len(out["observations"]) == 4 or out["broken"]  # nothing after the end
    # the nodes' records are in the run's trail, attributed
    commands = {e.episode_id for e in collecting.events if e.kind.value == "command"}
    assert commands == {f"rem-{i:02d}" for i in range(16)}
    shipped = {(v.episode_id, v.rule_id) for v in collecting.verdicts}
    assert shipped == {(f"rem-{i:02d}", r) for i in range(1, 16, 2)
                       for r in ("test.miner", "test.tunnel")}
    results = verify_state_dir(cluster_state, run="run-ray-remote")
    assert results and all(r.ok for r in results), [r.summary() for r in results]
