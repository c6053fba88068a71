"""NodeService without Ray: shipping, and freeze-then-kill on shutdown."""

from __future__ import annotations

import threading
import time

from bastion import Policy
from bastion.cluster import EpisodeSpec, NodeService, ShippingRecorder, deliver
from bastion.rl import RoguePolicy

from ..rl.fixtures import pattern_engine
from .helpers import Sleeper, running


class Sink:
    def __init__(self):
        self.events, self.verdicts = [], []

    def append_event(self, event):
        self.events.append(event)

    def append_verdict(self, verdict):
        self.verdicts.append(verdict)


def _service(state_dir):
    return NodeService("node-local", run_id="run-node", state_dir=str(state_dir),
                       policy=Policy.default(),
                       env_options={"engine_factory": pattern_engine, "exec_timeout": 60},
                       slots=2)


def test_records_ship_with_attribution(state_dir):
    service = _service(state_dir)
    result = service.run_episode(EpisodeSpec("n-rogue", RoguePolicy()))
    assert result["episode_id"] == "n-rogue" and result["node_id"] == "node-local"
    sink = Sink()
    assert deliver(service.drain(), sink) > 0
    assert service.drain() == []  # drained once
    miner = result["stage_steps"]["miner"]
    [verdict] = [v for v in sink.verdicts if v.rule_id == "test.miner"]
    assert (verdict.run_id, verdict.episode_id, verdict.step, verdict.call_id) == \
        ("run-node", "n-rogue", miner, f"c{miner}")
    commands = [e for e in sink.events if e.kind.value == "command"]
    assert [e.step for e in commands if e.call_id == f"c{miner}"] == [miner]
    service.shutdown()


def test_shutdown_freezes_and_kills_live_sessions(state_dir):
    service = _service(state_dir)
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault(
        "result", service.run_episode(EpisodeSpec("n-sleep", Sleeper()))))
    worker.start()
    pids: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(pids) < 3:
        pids = [p for ps in service.session_pids().values() for p in ps]
        time.sleep(0.05)
    assert len(pids) >= 3, pids
    assert service.shutdown("test over") == 1
    worker.join(30)
    assert not worker.is_alive()
    assert box["result"]["terminated_by"], box["result"]
    assert not [p for p in pids if running(p)]
    states = [e.get("life.state") for e in _events(service)]
    assert states.index("frozen") < states.index("terminated")


def _events(service):
    sink = Sink()
    deliver(service.drain(), sink)
    return [e for e in sink.events if e.kind.value == "lifecycle"]


def test_shipping_recorder_is_ordered():
    rec = ShippingRecorder("n")
    from bastion import Event, EventKind

    for i in range(5):
        rec.append_event(Event(EventKind.LIFECYCLE, step=i))
    assert [d["step"] for _, d in rec.drain()] == [0, 1, 2, 3, 4]
    assert rec.shipped == 5


def test_slots_follow_node_resources():
    from bastion.cluster import ClusterRun

    run = ClusterRun(run_id="r", state_dir="/var/tmp", session_cpus=0.5)
    assert run._slots({"CPU": 2.0, "memory": 8e9}) == 4
    run.session_memory = 4_000_000_000
    assert run._slots({"CPU": 2.0, "memory": 8e9}) == 2
    assert run._slots({"CPU": 0.0}) == 1  # a node always takes one session


def test_setup_failure_is_an_infra_failed_episode_not_a_crash(state_dir, tmp_path):
    from bastion.rl import OrdinaryPolicy
    from bastion.rl.records import EpisodeRecord

    service = _service(state_dir)
    try:
        missing = str(tmp_path / "no-such-image")
        result = service.run_episode(EpisodeSpec("n-setup", OrdinaryPolicy(), image=missing))
        record = EpisodeRecord.from_dict(result)
        assert record.infra_failed and "setup failed" in record.infra_reason
        assert record.excluded and record.penalty == 0.0 and not record.violated
        assert record.episode_id == "n-setup" and result["node_id"] == "node-local"
        # a remote session the node cannot build says so the same way
        opened = service.open_session("n-remote", image=missing)
        assert opened["infra_failed"] and "session_id" not in opened
        assert service.info()["sessions"] == 0
    finally:
        service.shutdown()
