"""``ClusterRun``: a run's episodes on a Ray cluster, one node service per node.

The driver (the trainer's process) starts one ``NodeService`` actor on every alive
Ray node, pinned there with a hard node-affinity strategy, and places each episode on
the node with the most free session slots, where a node's slots come from its Ray
resources (its CPUs divided by ``session_cpus``, and its memory divided by
``session_memory`` when given). While episodes run it drains each
node's shipped records into the run's recorder (the audit trail by default), so
events and verdicts keep their run/episode/step/call attribution across machines.

A node service that dies is noticed through the failed calls it leaves behind: its
episodes come back with status ``lost``, the run monitor is told which node and which
episodes, and, when the node is this host, the driver freezes and kills the dead
service's session cgroups (its sandboxes have already died with it through bwrap's
``--die-with-parent``). Works with a local ``ray.init()`` and with a cluster address.

A lost episode (its node gone, or its sandbox lost to an infrastructure failure, not
a verdict: ``EpisodeOutcome.infra_failed``) is run again, up to ``retries`` times
(default once), under a new episode id (``<id>-retry<k>``) on a node still alive.
Never silently: the lost attempt is counted by the run monitor as infra-failed, a
notice names both ids and the node, and the outcome returned for the spec is the
retry's, with ``retried_from`` listing every lost attempt. An episode a verdict ended
is the agent's outcome and is never retried.

The actors are async (``NodeActor``): calls run on each actor's event loop, a bounded
number at a time. ``start`` makes a per-run secret that every call to an actor must
carry (``NodeHandle.call`` adds it), and each remote session has a secret of its own
held by its ``RayRemoteSession``: a Ray client of the same cluster that finds an actor
handle without them is refused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from ..contracts import EventRecorder
from ..errors import BastionError
from ..policy import Policy
from ..rl.records import EpisodeRecord
from ..rl.safety import RunMonitor, TrainingStepStats
from .actor import NodeActor
from .node import EpisodeSpec
from .remote import RayRemoteSession
from .shipping import deliver

__all__ = ["ClusterRun", "EpisodeOutcome", "NodeHandle", "specs_for"]


@dataclass
class EpisodeOutcome:
    spec: EpisodeSpec
    status: str  # "ok" | "lost"
    node_id: str
    record: EpisodeRecord | None = None
    stage_steps: dict[str, int] = field(default_factory=dict)
    live_calls: dict[str, int] = field(default_factory=dict)
    agent_report: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    # the lost attempts this outcome replaces: "<episode id> on node <id>: <why>"
    retried_from: tuple[str, ...] = ()

    @property
    def retried(self) -> bool:
        return bool(self.retried_from)

    @property
    def episode_id(self) -> str:
        return self.spec.episode_id

    @property
    def infra_failed(self) -> bool:
        """Lost with its node, or its sandbox died for a reason not the agent's:
        leave it out of group statistics (``rl.exclude``), never penalise it."""
        return self.status == "lost" or (self.record is not None and self.record.infra_failed)


@dataclass
class NodeHandle:
    node_id: str
    address: str
    slots: int
    actor: Any
    alive: bool = True
    in_flight: int = 0
    cgroups: dict[str, str] = field(default_factory=dict)
    token: str = field(default="", repr=False)  # the run's secret

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``actor.<method>.remote(...)`` with the run's secret: an object ref."""
        return getattr(self.actor, method).remote(self.token, *args, **kwargs)


class ClusterRun:
    def __init__(
        self,
        policy: Policy | None = None,
        *,
        run_id: str,
        state_dir: str | os.PathLike[str],
        address: str | None = None,
        num_cpus: int | None = None,
        session_cpus: float = 0.125,
        session_memory: int | None = None,
        env_options: dict[str, Any] | None = None,
        recorder: EventRecorder | None = None,
        monitor: RunMonitor | None = None,
        drain_interval: float = 0.2,
        retries: int = 1,
    ) -> None:
        """``retries``: how many times a lost episode is run again (0: never)."""
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = retries
        self.policy = policy or Policy.default()
        self.run_id = run_id
        self.state_dir = str(Path(state_dir).absolute())
        self.address = address
        self.num_cpus = num_cpus
        self.session_cpus = session_cpus
        self.session_memory = session_memory
        self.env_options = dict(env_options or {})
        self.monitor = monitor or RunMonitor(self.policy.rl, run_id=run_id)
        self.drain_interval = drain_interval
        self._recorder = recorder
        self._owns_ray = False
        self.nodes: list[NodeHandle] = []
        self.delivered = 0
        self.token = ""  # the run's secret, made by start()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            elif self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            ray.init(**kwargs)
            self._owns_ray = True
        if self._recorder is None:
            from ..audit import open_trail

            self._recorder = open_trail(self.state_dir, self.run_id)
        self.token = self.token or secrets.token_urlsafe(32)
        remote_cls = ray.remote(NodeActor)
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            slots = self._slots(node.get("Resources", {}))
            actor = remote_cls.options(
                num_cpus=0,
                # tasks on the actor's loop at once: an episode or a remote session's
                # call per slot, plus drains, info and opening/closing sessions
                max_concurrency=2 * slots + 8,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            ).remote(node["NodeID"], token=self.token, run_id=self.run_id,
                     state_dir=self.state_dir, policy=self.policy,
                     env_options=self.env_options, slots=slots)
            self.nodes.append(NodeHandle(node["NodeID"], node.get("NodeManagerAddress", ""),
                                         slots, actor, token=self.token))
        if not self.nodes:
            raise BastionError("no alive Ray node to place sessions on")
        infos = ray.get([n.call("info") for n in self.nodes])  # fail loudly, now
        for handle, info in zip(self.nodes, infos, strict=True):
            handle.cgroups.update(info["cgroups"])
        return self

    def _slots(self, resources: dict[str, float]) -> int:
        """How many sessions a node takes: its CPUs over ``session_cpus`` and, when
        ``session_memory`` (bytes) is given, its Ray memory over that too."""
        slots = int(float(resources.get("CPU", 0)) / self.session_cpus)
        if self.session_memory:
            slots = min(slots, int(float(resources.get("memory", 0)) / self.session_memory))
        return max(1, slots)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        import ray

        for handle in self.nodes:
            if handle.alive:
                with contextlib.suppress(ray.exceptions.RayActorError):
                    self._drain(handle, ray)
                    ray.get(handle.call("shutdown", "run closed"))
                ray.kill(handle.actor)
        self.nodes = []
        if self._recorder is not None and hasattr(self._recorder, "flush"):
            self._recorder.flush()
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    # -- running episodes ---------------------------------------------------------------

    def run_episodes(self, specs: Iterable[EpisodeSpec], *, training_step: int = 0,
                     on_done: Callable[[EpisodeOutcome], None] | None = None,
                     end_step: bool = True) -> list[EpisodeOutcome]:
        """Run episodes across the nodes; returns one outcome per spec, in order.
        Each finished episode is recorded in the run monitor under ``training_step``
        (a lost one as infra-failed). With ``end_step`` (the default) the training
        step ends with this batch: the circuit breaker judges it, and a tripped
        breaker pauses the run (``monitor.paused``; the next ``run_episodes`` raises
        ``BreakerTripped``). Pass ``end_step=False`` to spread one training step over
        several calls, then call ``end_training_step``."""
        import ray

        self.monitor.check()  # a paused run starts no more episodes
        queue = deque(enumerate(specs))
        outcomes: dict[int, EpisodeOutcome] = {}
        pending: dict[Any, tuple[int, EpisodeSpec, NodeHandle, float]] = {}
        lost_before: dict[int, list[str]] = {}  # index -> the lost attempts so far
        last_drain = 0.0
        total = len(queue)
        while queue or pending:
            self._dispatch(queue, pending, outcomes)
            if not pending and queue:
                raise BastionError("no alive node service left to run episodes on")
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.drain_interval)
            for ref in ready:
                index, spec, handle, started = pending.pop(ref)
                handle.in_flight -= 1
                outcome = self._collect(ref, spec, handle, started, ray)
                earlier = lost_before.get(index, [])
                outcome.retried_from = tuple(earlier)
                if outcome.record is not None:
                    self.monitor.record(outcome.record, training_step=training_step)
                else:
                    self.monitor.record_lost(training_step=training_step)
                if outcome.infra_failed:
                    retry = self._retry(outcome, len(earlier))
                    if retry is not None:
                        lost_before[index] = [*earlier, self._describe_loss(outcome)]
                        queue.appendleft((index, retry))
                        continue
                outcomes[index] = outcome
                if on_done is not None:
                    on_done(outcome)
            if time.monotonic() - last_drain >= self.drain_interval:
                self._drain_all(ray)
                last_drain = time.monotonic()
        self._drain_all(ray)
        if end_step:
            self.end_training_step(training_step)
        return [outcomes[i] for i in range(total)]

    @staticmethod
    def _describe_loss(outcome: EpisodeOutcome) -> str:
        why = outcome.error or (outcome.record.infra_reason if outcome.record else None) \
            or outcome.status
        return f"{outcome.spec.episode_id} on node {outcome.node_id[:12]}: {why}"

    def _retry(self, outcome: EpisodeOutcome, attempts: int) -> EpisodeSpec | None:
        """The spec to run again for a lost episode, or None (retries used up, or no
        node left); either way the run is told."""
        lost = self._describe_loss(outcome)
        if attempts >= self.retries:
            if self.retries:
                self.monitor.notify(f"episode lost and not retried again ({attempts} "
                                    f"retries used): {lost}")
            return None
        if not any(n.alive for n in self.nodes):
            self.monitor.notify(f"episode lost and not retried (no node service left): {lost}")
            return None
        base = outcome.spec.episode_id.rsplit("-retry", 1)[0] if attempts else \
            outcome.spec.episode_id
        retry = replace(outcome.spec, episode_id=f"{base}-retry{attempts + 1}")
        self.monitor.notify(f"episode lost, retried as {retry.episode_id}: {lost}")
        return retry

    def end_training_step(self, training_step: int) -> TrainingStepStats:
        """Judge a finished training step with the run's circuit breaker; when it
        trips, the run is paused (recorded as a notice) and no further episodes
        start."""
        was_paused = self.monitor.paused
        stats = self.monitor.end_training_step(training_step)
        if self.monitor.paused and not was_paused:
            self.monitor.notify(self.monitor.paused)
        return stats

    # -- remote sessions, driven by the trainer's own loop ------------------------------

    def open_session(self, episode_id: str, *, image: str | None = None,
                     policy: Policy | None = None) -> RayRemoteSession:
        """Open a session on the node with the most free slots, for the trainer to
        drive through the returned handle (``exec``/``write_file``/``read_file``/
        ``close``, and their awaitable ``a*`` twins). Its records reach the run's
        trail through the same drains as ``run_episodes``'. Raises
        ``BastionError`` when no node has a free slot or the node could not build
        the sandbox (``infra_failed`` in the message)."""
        import ray

        self.monitor.check()
        free = [n for n in self.nodes if n.alive and n.in_flight < n.slots]
        if not free:
            raise BastionError("no node has a free session slot")
        node = max(free, key=lambda n: n.slots - n.in_flight)
        node.in_flight += 1
        try:
            data = ray.get(node.call("open_session", episode_id, image=image, policy=policy))
        except ray.exceptions.RayActorError as exc:
            node.in_flight -= 1
            self._node_lost(node, exc, ray)
            raise BastionError(f"infra_failed: node lost while opening {episode_id}") from exc
        except BaseException:
            node.in_flight -= 1
            raise
        if data.get("infra_failed"):
            node.in_flight -= 1
            raise BastionError(f"infra_failed: {data['infra_failed']}")

        def release(node: NodeHandle = node) -> None:
            node.in_flight -= 1

        return RayRemoteSession(node.actor, node.node_id, data["session_id"],
                                data["episode_id"], data["run_id"],
                                token=data["session_token"], _release=release)

    def drain(self) -> int:
        """Ship every node's records into the run's trail now (``run_episodes`` does
        it on its own; a trainer driving remote sessions calls this between steps).
        Returns how many records were delivered."""
        import ray

        before = self.delivered
        self._drain_all(ray)
        return self.delivered - before

    def _dispatch(self, queue: deque[tuple[int, EpisodeSpec]],
                  pending: dict[Any, tuple[int, EpisodeSpec, NodeHandle, float]],
                  outcomes: dict[int, EpisodeOutcome]) -> None:
        while queue:
            free = [n for n in self.nodes if n.alive and n.in_flight < n.slots]
            if not free:
                return
            node = max(free, key=lambda n: n.slots - n.in_flight)
            index, spec = queue.popleft()
            ref = node.call("run_episode", spec)
            node.in_flight += 1
            pending[ref] = (index, spec, node, time.monotonic())

    def _collect(self, ref: Any, spec: EpisodeSpec, handle: NodeHandle, started: float,
                 ray: Any) -> EpisodeOutcome:
        seconds = time.monotonic() - started
        try:
            data = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self._node_lost(handle, exc, ray)
            return EpisodeOutcome(spec, "lost", handle.node_id, error=str(exc).splitlines()[0],
                                  seconds=seconds)
        return EpisodeOutcome(spec, "ok", handle.node_id, EpisodeRecord.from_dict(data),
                              dict(data.get("stage_steps", {})), dict(data.get("live_calls", {})),
                              dict(data.get("agent_report", {})), seconds=seconds)

    def _drain(self, handle: NodeHandle, ray: Any) -> None:
        """Ship a node's records into the run's trail; once they are durable there,
        the node drops them from its spool (``ShippingRecorder.acknowledge``), so
        node spools stay as small as what is in transit."""
        records = ray.get(handle.call("drain"))
        assert self._recorder is not None
        if not records:
            return
        self.delivered += deliver(records, self._recorder)
        self._recorder.flush()
        ray.get(handle.call("acknowledge"))

    def _drain_all(self, ray: Any) -> None:
        for handle in self.nodes:
            if not handle.alive:
                continue
            try:
                self._drain(handle, ray)
                handle.cgroups.update(ray.get(handle.call("info"))["cgroups"])
            except ray.exceptions.RayActorError as exc:
                self._node_lost(handle, exc, ray)

    def _node_lost(self, handle: NodeHandle, exc: BaseException, ray: Any) -> None:
        if not handle.alive:
            return
        handle.alive = False
        killed = _kill_cgroups(handle.cgroups.values()) \
            if handle.node_id == ray.get_runtime_context().get_node_id() else 0
        self.monitor.notify(
            f"node service on node {handle.node_id[:12]} ({handle.address}) died: its "
            f"sessions were killed with it (fail closed; {killed} session cgroups killed "
            f"by the driver); episodes in flight there are lost ({type(exc).__name__})"
        )

    def lost_nodes(self) -> list[str]:
        return [n.node_id for n in self.nodes if not n.alive]


def _kill_cgroups(paths: Iterable[str]) -> int:
    """Freeze then kill each cgroup (v2) that still exists. Returns how many."""
    killed = 0
    for raw in paths:
        path = Path(raw)
        if not (path / "cgroup.kill").exists():
            continue
        with contextlib.suppress(FileNotFoundError):
            (path / "cgroup.freeze").write_text("1")
        with contextlib.suppress(FileNotFoundError):
            (path / "cgroup.kill").write_text("1")
            killed += 1
    return killed


def specs_for(agents: Sequence[Any], *, prefix: str) -> list[EpisodeSpec]:
    """Convenience: one spec per agent, episode ids ``<prefix>-<i>``."""
    return [EpisodeSpec(f"{prefix}-{i:03d}", agent, labels={"policy": agent.name})
            for i, agent in enumerate(agents)]
