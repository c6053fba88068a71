"""The bastion node service: one per Ray node, owning that node's sessions.

It runs episodes in its own long-lived threads (a sandbox is started with bwrap
``--die-with-parent``, whose parent-death signal follows the *thread* that started
it, so those threads must outlive their sessions), records everything into a
``ShippingRecorder`` for the driver to drain, and keeps the list of live sessions so
that it can freeze and kill them on shutdown. If the service process dies instead, its
sessions die with it: bwrap gets SIGKILL through ``--die-with-parent``, and with it
the sandbox's PID namespace and every process in it; the driver also kills their
cgroups when it can see them (same host).

This class is plain Python; ``cluster.run`` wraps it with ``ray.remote``.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import BastionError, PolicyError, SessionBroken, SessionClosed
from ..host import Host
from ..policy import Policy
from ..rl.env import BastionEnv
from ..rl.records import EpisodeRecord
from ..rl.rogue import ScriptedPolicy
from ..rl.rollout import run_episode
from ..rl.shaping import excluded
from ..session import Session
from .shipping import Shipped, ShippingRecorder

__all__ = ["EpisodeSpec", "NodeService"]


# env_options that shape the node's sessions rather than the BastionEnv: engine and
# responder factories, each ``f(policy)``.
_SESSION_OPTIONS = frozenset({"engine_factory", "responder_factory"})


@dataclass
class EpisodeSpec:
    """One episode to run: who acts, under which id, with which labels."""

    episode_id: str
    agent: ScriptedPolicy
    seed: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    image: str | None = None  # the episode's task image (bastion.image); None: the rootfs
    policy: Policy | None = None  # the episode's policy; None: the run's


def _live_calls(session: Session) -> dict[str, int]:
    """Tool calls that still have running processes, with how many."""
    return session.live_calls()


class NodeService:
    def __init__(self, node_id: str, *, run_id: str, state_dir: str, policy: Policy,
                 env_options: dict[str, Any] | None = None, slots: int = 4) -> None:
        self.node_id = node_id
        self.run_id = run_id
        self.state_dir = state_dir
        self.policy = policy
        self.env_options = dict(env_options or {})
        self.recorder = ShippingRecorder(node_id)
        self.host = Host.for_state_dir(state_dir)  # fails here, loudly, if unusable
        self._pool = ThreadPoolExecutor(max_workers=max(1, slots),
                                        thread_name_prefix="bastion-node")
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._cgroups: dict[str, str] = {}
        self._remote: dict[str, set[str]] = {}  # remote session id -> verdict ids sent
        self.completed = 0

    def _session_factory(self, episode_id: str, *, image: str | None = None,
                         policy: Policy | None = None) -> Session:
        policy = policy or self.policy
        kwargs: dict[str, Any] = {"image": image} if image is not None else {}
        engine_factory = self.env_options.get("engine_factory")
        if engine_factory is not None:
            kwargs["engine"] = engine_factory(policy)
        responder_factory = self.env_options.get("responder_factory")
        if responder_factory is not None:
            kwargs["responder"] = responder_factory(policy)
        session = Session(policy, run_id=self.run_id, episode_id=episode_id,
                          host=self.host, recorder=self.recorder, **kwargs)
        with self._lock:
            self._sessions[session.session_id] = session
            if session.sandbox is not None and session.sandbox.cgroup is not None:
                self._cgroups[session.session_id] = str(session.sandbox.cgroup.unified)
        return session

    def _run(self, spec: EpisodeSpec) -> dict[str, Any]:
        options = {k: v for k, v in self.env_options.items() if k not in _SESSION_OPTIONS}
        factory = functools.partial(self._session_factory, image=spec.image, policy=spec.policy)
        env = BastionEnv(spec.policy or self.policy, run_id=self.run_id,
                         name=f"node-{self.node_id[:8]}", session_factory=factory, **options)
        labels = {**spec.labels, "node": self.node_id}
        try:
            try:
                record = run_episode(env, spec.agent, episode_id=spec.episode_id,
                                     seed=spec.seed, labels=labels, close=False)
            except PolicyError:
                raise  # a bad policy is the run's mistake: loud
            except BastionError as exc:
                if env.record is not None:
                    raise  # the episode had started: not a setup failure
                # the sandbox could not be built (setup, resources, the host): an
                # infra failure of this episode, not a violation and not a crash
                return self._infra_result(spec, labels, f"session setup failed: {exc}")
            session = env.session
            result = record.to_dict()
            result["stage_steps"] = dict(getattr(spec.agent, "stage_steps", {}) or {})
            result["node_id"] = self.node_id
            result["live_calls"] = _live_calls(session) if session else {}
            report = getattr(spec.agent, "report", None)
            result["agent_report"] = report() if callable(report) else {}
            return result
        finally:
            sid = env.session.session_id if env.session else None
            env.close()
            with self._lock:
                if sid:
                    self._sessions.pop(sid, None)
                self.completed += 1

    def _infra_result(self, spec: EpisodeSpec, labels: dict[str, str],
                      reason: str) -> dict[str, Any]:
        policy = spec.policy or self.policy
        record = EpisodeRecord(run_id=self.run_id, episode_id=spec.episode_id, session_id="",
                               policy_hash=policy.hash, labels=labels, infra_reason=reason,
                               excluded=excluded("keep", True, policy.rl))
        return {**record.to_dict(), "stage_steps": {}, "node_id": self.node_id,
                "live_calls": {}, "agent_report": {}}

    # -- the actor's interface --------------------------------------------------------

    def run_episode(self, spec: EpisodeSpec) -> dict[str, Any]:
        """Run one episode on this node; returns its ``EpisodeRecord`` as a dict."""
        return self._pool.submit(self._run, spec).result()

    def drain(self) -> list[Shipped]:
        return self.recorder.drain()

    # -- remote sessions: a trainer-side loop drives a session living here -------------

    def open_session(self, episode_id: str, *, image: str | None = None,
                     policy: Policy | None = None) -> dict[str, Any]:
        """Open a session on this node for a trainer to drive (``RemoteSession``).
        Created on one of the node's long-lived threads: bwrap's parent-death signal
        follows the thread that started it (see the module docstring)."""
        try:
            session = self._pool.submit(self._session_factory, episode_id, image=image,
                                        policy=policy).result()
        except PolicyError:
            raise
        except BastionError as exc:  # the sandbox could not be built: not the agent's
            return {"infra_failed": f"session setup failed: {exc}", "node_id": self.node_id}
        with self._lock:
            self._remote[session.session_id] = set()
        return {"session_id": session.session_id, "episode_id": session.episode_id,
                "run_id": session.run_id, "node_id": self.node_id, "infra_failed": None}

    def _remote_session(self, session_id: str) -> tuple[Session, set[str]]:
        with self._lock:
            session = self._sessions.get(session_id)
            seen = self._remote.get(session_id)
        if session is None or seen is None:
            raise SessionClosed(f"no open remote session {session_id} on this node")
        return session, seen

    def _fresh_verdicts(self, session: Session, seen: set[str]) -> list[dict[str, Any]]:
        """Verdicts of the session not yet sent to the trainer (streamed with every
        reply, and by ``session_verdicts``)."""
        with self._lock:
            fresh = [v for v in list(session.verdicts) if v.id not in seen]
            seen.update(v.id for v in fresh)
        return [v.to_dict() for v in fresh]

    def _reply(self, session: Session, seen: set[str], result: Any = None,
               broken: str | None = None) -> dict[str, Any]:
        session.settle()
        return {"result": result.to_dict() if result is not None else None,
                "broken": broken, "ended": session.ended,
                "infra_failed": session.infra_failure,
                "verdicts": self._fresh_verdicts(session, seen)}

    def session_call(self, session_id: str, tool: str, *, command: str | list[str] = "",
                     path: str = "", content: str = "", step: int | None = None,
                     call_id: str | None = None, timeout: float | None = None
                     ) -> dict[str, Any]:
        """One tool call (``exec``, ``write_file`` or ``read_file``) in a remote
        session; the reply carries the result, the verdicts raised since the last
        reply, and whether the session has ended (and if for infra reasons)."""
        session, seen = self._remote_session(session_id)
        try:
            if tool == "exec":
                result = session.exec(command, step=step, call_id=call_id, timeout=timeout)
            elif tool == "write_file":
                result = session.write_file(path, content, step=step, call_id=call_id)
            elif tool == "read_file":
                result = session.read_file(path, step=step, call_id=call_id)
            else:
                raise ValueError(f"unknown tool {tool!r}")
        except SessionBroken as exc:
            return self._reply(session, seen, broken=str(exc))
        return self._reply(session, seen, result)

    def session_verdicts(self, session_id: str) -> list[dict[str, Any]]:
        """Verdicts raised since the last reply (e.g. on a background process)."""
        session, seen = self._remote_session(session_id)
        return self._fresh_verdicts(session, seen)

    def close_session(self, session_id: str) -> dict[str, Any]:
        """Close a remote session (kills everything it started); returns the verdicts
        not yet sent and how it ended."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
            seen = self._remote.pop(session_id, None)
        if session is None or seen is None:
            return {"closed": False, "verdicts": [], "ended": None, "infra_failed": None}
        try:
            session.close()
        finally:
            with self._lock:
                self._cgroups.pop(session_id, None)
        return {"closed": True, "verdicts": self._fresh_verdicts(session, seen),
                "ended": session.ended, "infra_failed": session.infra_failure}

    def acknowledge(self) -> None:
        """The driver made everything drained so far durable in the run's trail."""
        self.recorder.acknowledge()

    def spool_records(self) -> int:
        """Records in this node's spool (in transit to the driver)."""
        return self.recorder.spooled

    def info(self) -> dict[str, Any]:
        with self._lock:
            return {"node_id": self.node_id, "pid": os.getpid(),
                    "sessions": len(self._sessions), "completed": self.completed,
                    "episodes": sorted(s.episode_id for s in self._sessions.values()),
                    "cgroups": dict(self._cgroups)}

    def session_pids(self) -> dict[str, list[int]]:
        """Host pids of every live session's processes (for checks and reports)."""
        with self._lock:
            sessions = list(self._sessions.values())
        return {s.session_id: (s.sandbox.cgroup.pids() if s.sandbox and s.sandbox.cgroup else [])
                for s in sessions}

    def shutdown(self, reason: str = "node service shutting down") -> int:
        """Freeze, then kill and close every live session. Returns how many."""
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            if not session.closed:
                session.freeze()
        for session in sessions:
            if not session.closed:
                session.terminate(reason)
                session.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        return len(sessions)
