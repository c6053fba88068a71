"""Several Ray nodes on this one machine (``ray.cluster_utils.Cluster``: a head and a
worker, each its own raylet with its own resources): episodes are placed on every
node, every node's records reach the run's trail with their attribution, and a node
killed mid-run takes its sessions with it; its episodes in flight are lost
(``infra_failed``, not judged by the breaker), each is retried once on the surviving
node under a new episode id and reported as retried, and the trail still verifies.

The cluster runs in a child process: a process holds one Ray driver, and the other
cluster tests share this process's local Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

_REPO = Path(__file__).resolve().parents[2]

_DRIVER = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
import ray
from ray.cluster_utils import Cluster
from bastion import Policy
from bastion.audit import open_trail, verify_state_dir
from bastion.cluster import ClusterRun, EpisodeSpec
from tests.cluster import helpers
from tests.rl import fixtures

state = sys.argv[2]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
worker = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
ray.cloudpickle.register_pickle_by_value(helpers)
ray.cloudpickle.register_pickle_by_value(fixtures)
collecting = helpers.Collecting(open_trail(state, "run-multi"))
run = ClusterRun(Policy.default(), run_id="run-multi", state_dir=state, session_cpus=0.25,
                 env_options={"engine_factory": fixtures.pattern_engine, "exec_timeout": 30},
                 recorder=collecting, drain_interval=0.2)
run.start()
head_id = ray.get_runtime_context().get_node_id()
nodes = {n.node_id: n for n in run.nodes}
doomed = next(n for n in run.nodes if n.node_id != head_id)
specs = [EpisodeSpec(f"m-{i}", helpers.Slow()) for i in range(8)]
box = {}
thread = threading.Thread(target=lambda: box.setdefault("out", run.run_episodes(specs)))
thread.start()
deadline = time.monotonic() + 60
seen = set()
while time.monotonic() < deadline:
    # a call of an episode of each node has reached the run's trail
    seen = {e.episode_id for e in collecting.events
            if e.kind.value == "lifecycle" and e.get("life.state") == "call_end"}
    infos = {n.node_id: ray.get(n.call("info")) for n in run.nodes}
    # both nodes run episodes, and one of the doomed node's has shipped a call
    if all(i["sessions"] for i in infos.values()) and \
            set(infos[doomed.node_id]["episodes"]) & seen and len(seen) >= 2:
        break
    time.sleep(0.1)
placed = {n.node_id: ray.get(n.call("info"))["sessions"] for n in run.nodes}
pids = ray.get(doomed.call("session_pids"))
cluster.remove_node(worker, allow_graceful=False)
thread.join(120)
outcomes = box["out"]
time.sleep(1.0)
alive = [p for ps in pids.values() for p in ps if helpers.running(p)]
stats = run.monitor.stats(0)
run.close()
results = verify_state_dir(state, run="run-multi")
shipped = {}
for e in collecting.events:
    if e.kind.value == "command":
        shipped.setdefault(e.episode_id, set()).add((e.run_id, e.step, e.call_id))
print("RESULT " + json.dumps({
    "head": head_id, "doomed": doomed.node_id, "placed": placed,
    "outcomes": [{"episode": o.spec.episode_id, "status": o.status, "node": o.node_id,
                  "infra_failed": o.infra_failed, "retried_from": list(o.retried_from),
                  "steps": len(o.record.steps) if o.record else None,
                  "record_node": o.record.labels.get("node") if o.record else None}
                 for o in outcomes],
    "alive_after": alive, "session_pids": sum(len(p) for p in pids.values()),
    "shipped": {k: sorted(map(list, v)) for k, v in shipped.items()},
    "verified": [r.ok for r in results], "notices": run.monitor.notices,
    "infra_failed": stats.infra_failed, "judged": stats.judged, "paused": run.monitor.paused,
}), flush=True)
ray.shutdown()
cluster.shutdown()
"""


def test_two_nodes_one_killed_mid_run(state_dir):
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(_REPO), str(state_dir)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [line] = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    assert all(n > 0 for n in out["placed"].values()), out["placed"]  # both nodes used
    by_node: dict[str, list[dict]] = {}
    for o in out["outcomes"]:
        by_node.setdefault(o["node"], []).append(o)
    assert set(by_node) <= {out["head"], out["doomed"]}
    # the surviving node's episodes finished, recorded as run on that node
    for o in by_node[out["head"]]:
        assert o["status"] == "ok" and not o["infra_failed"], o
        assert o["record_node"] == out["head"] and o["steps"] == 4
    # the killed node's episodes in flight were lost (infra-failed, not judged) and
    # each was run again once on the surviving node, under a new id, reported as such
    retried = [o for o in out["outcomes"] if o["retried_from"]]
    assert retried, out["outcomes"]
    for o in retried:
        assert o["status"] == "ok" and o["node"] == out["head"] and o["steps"] == 4, o
        assert o["episode"].endswith("-retry1")
        [first] = o["retried_from"]
        assert first.startswith(o["episode"].removesuffix("-retry1") + " on node "), first
        assert any(f"retried as {o['episode']}" in n for n in out["notices"]), out["notices"]
    # (a loaded machine may also lose a head episode's sandbox: retried the same way)
    assert any(f" on node {out['doomed'][:12]}" in o["retried_from"][0] for o in retried)
    assert all(o["status"] == "ok" for o in out["outcomes"])
    assert out["infra_failed"] == len(retried) and out["paused"] is None
    assert any("died" in n for n in out["notices"])
    lost = [{"episode": o["retried_from"][0].split(" on node ")[0]} for o in retried]
    # its sandboxes died with it
    assert out["session_pids"] > 0 and out["alive_after"] == []
    # both nodes' records are in the run's trail with their attribution, and it verifies
    for o in out["outcomes"]:
        assert o["episode"] in out["shipped"]
    assert any(o["episode"] in out["shipped"] for o in lost)  # shipped before the kill
    for episode, calls in out["shipped"].items():
        assert all(run_id == "run-multi" and call_id in (f"c{step}", f"grade-{step}")
                   for run_id, step, call_id in calls), (episode, calls)
    assert out["verified"] and all(out["verified"])
