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

from ..conftest import wait_for
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
        infos = ray.get([n.call("info") for n in run.nodes])
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


def test_a_handle_without_the_secrets_is_refused_and_cancel_kills_the_call(cluster_state):
    """Another Ray client that holds the node actor's handle (they can be found in the
    cluster) but not the run's or the session's secret gets nothing: not a session,
    not a call, not a drain of the trail's records. And a trainer that cancels an
    awaited call kills it on the node."""
    run = ClusterRun(Policy.default(), run_id="run-ray-auth", state_dir=cluster_state)
    with run:
        node = run.nodes[0]
        handle = run.open_session("auth-0")
        other = run.open_session("auth-1")
        try:
            assert handle.exec("echo ok > mine.txt", step=0).ok
            # the actor handle alone: every method refuses without the run's secret
            for method, args in (("open_session", ("intruder",)), ("drain", ()),
                                 ("info", ()), ("shutdown", ("stop",))):
                for token in ("", "not-the-secret", None):
                    with pytest.raises(PermissionError, match="refused"):
                        ray.get(getattr(node.actor, method).remote(token, *args))
            # a forged session handle: no secret, a wrong one, another session's one
            forged = [type(handle)(node.actor, node.node_id, handle.session_id,
                                   handle.episode_id, handle.run_id, token=t)
                      for t in ("", "guess", other.token, run.token)]
            for f in forged:
                with pytest.raises(PermissionError, match="refused"):
                    f.exec("echo pwned > mine.txt", step=1, call_id=f"forged-{id(f)}")
                with pytest.raises(PermissionError, match="refused"):
                    f.poll_verdicts()
                with pytest.raises(PermissionError, match="refused"):
                    ray.get(node.actor.close_session.remote(f.token, handle.session_id))
            # nothing the forged handles asked for ran, the session is intact
            assert handle.read_file("mine.txt", step=2).stdout == "ok\n"
            info = ray.get(node.call("info"))
            assert info["refused"] >= 12 + 3 * len(forged) and info["sessions"] == 2

            # cancelling an awaited call cancels it on the node: the sleep is killed
            def sleeping() -> bool:
                pids = ray.get(node.call("session_pids"))[handle.session_id]
                return any(_cmdline(p).startswith("sleep 300") for p in pids)

            async def cancel() -> None:
                task = asyncio.ensure_future(handle.aexec("sleep 300", step=3, timeout=600))
                assert await asyncio.to_thread(wait_for, sleeping, 60), "the call never ran"
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                # the session's one-call-at-a-time lock is free again: the sleep is gone
                result = await asyncio.wait_for(handle.aexec("echo after", step=4), 120)
                assert result.stdout == "after\n"

            asyncio.run(cancel())
            assert not wait_for(sleeping, 0)
        finally:
            handle.close()
            other.close()
        assert ray.get(node.call("info"))["sessions"] == 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_handle_of_another_run_is_refused(cluster_state):
    """The per-run secret is the boundary: two runs on one Ray cluster (two trainers,
    or a stale driver) each hold only their own. Run B's secret and B's session
    handles are refused by run A's node actor, and the other way round; nothing they
    asked for ran."""
    run_a = ClusterRun(Policy.default(), run_id="run-ray-a", state_dir=cluster_state)
    run_b = ClusterRun(Policy.default(), run_id="run-ray-b", state_dir=cluster_state)
    with run_a, run_b:
        assert run_a.token != run_b.token
        node_a, node_b = run_a.nodes[0], run_b.nodes[0]
        mine = run_a.open_session("a-0")
        theirs = run_b.open_session("b-0")
        try:
            assert mine.exec("echo a > owner.txt", step=0).ok
            assert theirs.exec("echo b > owner.txt", step=0).ok
            # B's run secret on A's actor (and A's on B's): every control call refused
            for actor, token in ((node_a.actor, run_b.token), (node_b.actor, run_a.token)):
                for method, args in (("open_session", ("intruder",)), ("drain", ()),
                                     ("info", ()), ("session_pids", ())):
                    with pytest.raises(PermissionError, match="refused"):
                        ray.get(getattr(actor, method).remote(token, *args))
            # B's session handle pointed at A's actor and A's session: refused
            crossed = [type(theirs)(node_a.actor, node_a.node_id, mine.session_id,
                                    mine.episode_id, mine.run_id, token=t)
                       for t in (theirs.token, run_b.token)]
            for handle in crossed:
                with pytest.raises(PermissionError, match="refused"):
                    handle.exec("echo pwned > owner.txt", step=1, call_id=f"x-{id(handle)}")
            # A session id of B's does not exist on A's actor, even with B's secret
            lost = type(theirs)(node_a.actor, node_a.node_id, theirs.session_id,
                                theirs.episode_id, theirs.run_id, token=theirs.token)
            with pytest.raises(PermissionError, match="refused"):
                lost.exec("echo pwned > owner.txt", step=1, call_id="x-lost")
            assert mine.read_file("owner.txt", step=2).stdout == "a\n"
            assert theirs.read_file("owner.txt", step=1).stdout == "b\n"
            assert ray.get(node_a.call("info"))["refused"] >= 4 + len(crossed) + 1
        finally:
            mine.close()
            theirs.close()
