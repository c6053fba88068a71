"""``Session``: one sandbox per episode, and the single choke point for tool calls.

Every tool call goes through ``Session.exec``: it is tagged with its step and call id,
analysed before it runs, run in the session's long-lived sandbox inside its own call
cgroup (so everything it starts stays charged to it), and answered with an
``ExecResult`` carrying the verdicts charged to that call.

Control flows one way, like data. Observers (sensors, the gateway) hold a read-only
``Watched`` view of the session and an ``EventSink``; they only submit. Everything
after an event is produced runs on the session's own serial executor:

    submit -> record event -> evaluate -> plan (responder) -> record verdict
           -> (durable) -> carry out the commands -> record action -> lifecycle

so the trail reads ``command -> verdict -> action -> lifecycle``, and one slow
response (a quarantine copying a workspace) never stalls another session or the
sensor thread that serves them all. Any failure in that path ends the session (fail
closed) rather than letting the agent carry on unobserved.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import posixpath
import secrets
import shlex
import shutil
import signal as _signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

from .analysis import CallMemory, analyze_argv, analyze_command
from .analysis.sandboxfs import SandboxFiles
from .analysis.nested import inline_code, names_code_runner
from .audit import TrailConfig, lease_trail, release_trail
from .calls import analysable, check_call
from .containment import disk_limit_verdict, supervisor_lost_verdict
from .contracts import (
    DESTRUCTIVE,
    Alert,
    CallRef,
    Command,
    Cut,
    Evaluator,
    EventRecorder,
    Freeze,
    KillCall,
    KillSocketOwner,
    KillTree,
    Quarantine,
    Refuse,
    ResponsePlanner,
    SessionState,
    Terminate,
    make_event,
)
from .engine.build import build_engine
from .errors import BastionError, InternalError, SessionBroken, SessionClosed
from .events import Action, Event, EventKind, Verdict
from .executor import SerialExecutor
from .gateway import NetworkAttachment, attach_network
from .host import Host
from .image.view import ImageView, open_view
from .policy import Policy
from .respond import Responder
from .respond.kill import kill_tree
from .respond.quarantine import quarantine
from .respond.webhook import WebhookSender
from .results import ExecResult, Outcome
from .sandbox import CallHandle, RawResult, Sandbox
from .sandbox.bwrap import WORKSPACE
from .sandbox.cleanup import owner_record
from .sandbox.sandbox import CANCELLED
from .sandbox.steps import Blocking, CallCancelled, Steps, drive
from .sandbox.watch import watcher
from .sensors.procfs import read_cgroup
from .sensors.sockets import socket_owner
from .state import check_traversable
from .trusted_files import TrustedFiles

__all__ = ["Session"]

_DEFAULT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": WORKSPACE,
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "USER": "agent",
}

# Verdict actions that stop the call they are charged to.
_STOPPING = (Action.KILL, Action.TERMINATE, Action.QUARANTINE, Action.FREEZE, Action.DENY)
# Commands that do nothing once the session has stopped.
_CONTAINING = (Action.KILL, Action.CUT, Action.FREEZE, Action.TERMINATE, Action.QUARANTINE)
# A file written through write_file is recorded verbatim up to this size (if it is text).
_RECORDED_TEXT = 64 * 1024
# a session's trail: queued appends (exec() flushes before a command runs), and what
# nobody waits for lingers 50 ms so that the records of a call share a commit
_TRAIL_CONFIG = TrailConfig(durable_appends=False, linger=0.05)
# ... and analysed as a command up to this size (a larger file is judged by its path).
_ANALYSED_TEXT = 1024 * 1024


@functools.lru_cache(maxsize=8)
def _shell(rootfs: str) -> str:
    """Agents write bash; fall back to sh on a root filesystem without it."""
    return "/bin/bash" if os.path.exists(os.path.join(rootfs, "bin/bash")) else "/bin/sh"


class _Call:
    """Book-keeping for one tool call, alive for as long as any of its processes."""

    __slots__ = (
        "call_id",
        "cgroup",
        "command",
        "finished",
        "host_pid",
        "ref",
        "step",
        "stop_reason",
        "verdicts",
    )

    def __init__(self, call_id: str, step: int | None, command: str) -> None:
        self.call_id = call_id
        self.step = step
        self.ref = CallRef(call_id, step)
        self.command = command
        self.cgroup: Path | None = None
        self.host_pid: int | None = None
        self.verdicts: list[Verdict] = []
        self.stop_reason: str | None = None
        self.finished = False  # its ExecResult was returned; later verdicts are "late"


class _View:
    """The session as its observers and its response planner see it (``Watched``):
    read-only, every call lookup under the session's lock."""

    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    @property
    def session_id(self) -> str:
        return self._s.session_id

    @property
    def run_id(self) -> str:
        return self._s.run_id

    @property
    def episode_id(self) -> str:
        return self._s.episode_id

    @property
    def policy(self) -> Policy:
        return self._s.policy

    @property
    def workspace(self) -> Path:
        return self._s.workspace

    @property
    def cgroup(self) -> Any:
        sandbox = self._s.sandbox
        return sandbox.cgroup if sandbox is not None else None

    @property
    def state(self) -> SessionState:
        s = self._s
        if s._closed:
            return SessionState.CLOSED
        if s._ended:
            return SessionState.ENDED
        return SessionState.FROZEN if s.frozen else SessionState.OPEN

    @property
    def verdict_count(self) -> int:
        """How many verdicts the session has had (the gateway's remembered connect
        judgements hold only while this is unchanged)."""
        return len(self._s.verdicts)

    def owns_cgroup(self, cgroup_path: str) -> bool:
        sid = self._s.session_id
        return f"/{sid}/" in cgroup_path or cgroup_path.endswith(f"/{sid}")

    def call_for_cgroup(self, cgroup_path: str) -> CallRef | None:
        if not self.owns_cgroup(cgroup_path):
            return None  # call cgroups are named call-N in every session
        name = cgroup_path.rstrip("/").rsplit("/", 1)[-1]
        with self._s._lock:
            call = self._s._calls_by_cgroup.get(name)
        return call.ref if call is not None else None

    def call_by_host_pid(self, pid: int) -> CallRef | None:
        with self._s._lock:
            for call in reversed(list(self._s._calls.values())):
                if call.host_pid == pid:
                    return call.ref
        return None

    def latest_call(self) -> CallRef | None:
        with self._s._lock:
            return next(reversed(self._s._calls.values())).ref if self._s._calls else None

    def call_pending(self, call_id: str) -> bool:
        with self._s._lock:
            call = self._s._calls.get(call_id)
            return call is not None and call.cgroup is None and not call.finished


class _Sink:
    """The way into the session (``EventSink``): submit queues, contain stops."""

    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def submit(self, event: Event) -> Future[list[Verdict]]:
        return self._s._executor.submit(self._s._process, event)

    def contain(self, reason: str) -> None:
        self._s._contain(reason)


class Session:
    """An isolated, observed sandbox for one episode.

    >>> with Session(run_id="r1", episode_id="e1") as s:
    ...     r = s.exec("echo hi", step=0)
    """

    def __init__(
        self,
        policy: Policy | str | os.PathLike[str] | None = None,
        *,
        run_id: str = "",
        episode_id: str = "",
        session_id: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        lab: bool = False,
        host: Host | None = None,
        recorder: EventRecorder | None = None,
        engine: Evaluator | None = None,
        responder: ResponsePlanner | None = None,
        image: str | os.PathLike[str] | None = None,
        prepare: Callable[[Path, int], None] | None = None,
    ) -> None:
        """``prepare(workspace, uid)`` fills the workspace from the host before the
        sandbox exists (a task's files): protected paths it creates are then masked
        read-only like any other, and the file sensor's baseline includes them."""
        if policy is None:
            policy = Policy.default()
        elif not isinstance(policy, Policy):
            policy = Policy.load(policy)
        self.policy: Policy = policy
        self.session_id = session_id or f"s-{secrets.token_hex(6)}"
        self.run_id = run_id or self.session_id
        self.episode_id = episode_id or self.session_id
        self.lab = lab
        self.host = host or Host.for_state_dir(state_dir)
        # The pipeline: the policy's rule packs and detectors decide, the responder
        # plans, this session acts, the run's audit trail records. Each of the three
        # stages can be replaced (tests, benchmarks).
        self._engine: Evaluator = engine if engine is not None else build_engine(policy)
        self._planner: ResponsePlanner = responder or Responder(policy.response)
        self._webhook = WebhookSender(policy.response.webhook) if policy.response.webhook else None
        # Appends are queued and group-committed; exec() flushes before a command runs,
        # so nothing the agent does can precede the durable record of what it asked.
        # What nobody waits for (the sensors' records during a call, resource samples)
        # lingers up to 50 ms for company: a call's records share a transaction.
        self._owns_recorder = recorder is None
        self._recorder: EventRecorder = recorder or lease_trail(
            self.host.state.root, self.run_id, config=_TRAIL_CONFIG)
        self._lock = threading.RLock()  # the call tables; never held across pipeline work
        self._calls: dict[str, _Call] = {}
        self._calls_by_cgroup: dict[str, _Call] = {}
        self._undelivered: list[Verdict] = []  # late verdicts, delivered with the next call
        self._closed = False
        self._ended: str | None = None  # why the session refuses further calls
        # infrastructure, not the agent: why the sandbox was lost while no process of
        # the agent's existed (see _note_quiet); None otherwise
        self.infra_failure: str | None = None
        self._quiet = True  # no agent process exists (none has run yet)
        self._retired: set[str] = set()  # answered calls whose cgroup was seen empty
        self._step_counter = 0
        # what earlier calls' commands fetched, for the next ones (analysis.CallMemory)
        self._call_memory = CallMemory()
        # (call, argv) of inline code already judged (see _nested_command)
        self._nested_seen: set[tuple[str, tuple[str, ...]]] = set()
        self._deferred: list[Event] | None = None  # lifecycle events raised while acting
        self.created_at = time.time()
        self._deadline = time.monotonic() + policy.sandbox.limits.session_timeout
        self.frozen = False
        self.sandbox: Sandbox | None = None
        # the task image this session runs in (argument, else the policy's sandbox.image)
        self._image_ref = image if image is not None else policy.sandbox.image
        self.image_view: ImageView | None = None
        self.events: list[Event] = []  # kept in memory for the session's lifetime
        self.verdicts: list[Verdict] = []
        self._network: NetworkAttachment | None = None
        self._view = _View(self)
        self._sink = _Sink(self)
        self._executor = SerialExecutor(f"bastion-pipeline-{self.session_id}")
        try:
            self._setup_dirs()
            # a client's config as the sandbox has it now (analysis/clientconf.py)
            self._call_memory.files = SandboxFiles(self.trusted_files.host_dirs)
            if prepare is not None:
                prepare(self.workspace, self.host_uid)
            if self._image_ref is not None:
                self.image_view = open_view(
                    self._image_ref, state_root=self.host.state.root, session_dir=self.dir,
                    host_uid=self.host_uid, workspace=policy.sandbox.workspace,
                    # what the agent writes into the image: the same limits as /tmp
                    disk=max(4096, min(policy.sandbox.limits.disk,
                                       policy.sandbox.limits.memory // 2)),
                    inodes=policy.sandbox.limits.inodes,
                    protected=policy.sandbox.protected, hidden=policy.sandbox.hidden)
            self._network = attach_network(self._view, self._sink, lab=lab)
            self.sandbox = Sandbox(
                policy.sandbox,
                name=self.session_id,
                workspace=self.workspace,
                state_dir=self.host.state.root,
                cgroup_host=self.host.cgroups,
                host_uid=self.host_uid,
                netns=self._network.netns_path,
                image=self.image_view,
                on_lost=self._supervisor_lost,
                trust=getattr(self._network, "ca_bundle", None),
            )
            self.sandbox.start()
            self._recorder.append_policy(policy, episode_id=self.episode_id)
            self.host.register(self._view, self._sink)
            # waited for: what the observers reported on registration is in the trail
            self._lifecycle("created", policy=policy.name, policy_hash=policy.hash,
                            unenforced=",".join([*self.host.unenforced_limits(),
                                                 *self.sandbox.unenforced]))
        except BaseException:
            self._cleanup_resources()
            raise

    # -- setup ------------------------------------------------------------------------

    def _setup_dirs(self) -> None:
        self.host_uid = self.host.allocate_uid()
        self.dir = self.host.state.sessions / self.session_id
        self.dir.mkdir(mode=0o711)
        (self.dir / "owner").write_text(owner_record())  # lets `bastion cleanup` tell orphans
        configured = self.policy.sandbox.workspace
        if configured and self._image_ref is not None and configured.startswith("/"):
            configured = None  # an image path (`workspace: /testbed`), not a host directory
        if configured:
            self.workspace = Path(configured).absolute()
            self.workspace.mkdir(parents=True, exist_ok=True)
            check_traversable(self.workspace, "workspace")
            # the agent works as the session's uid: give it the tree it is meant to edit
            for root, dirs, files in os.walk(self.workspace):
                for name in (*dirs, *files):
                    os.lchown(os.path.join(root, name), self.host_uid, self.host_uid)
        else:
            self.workspace = self.dir / "workspace"
            self.workspace.mkdir(mode=0o700)
        os.chown(self.workspace, self.host_uid, self.host_uid)

    def set_network_phase(self, phase: str) -> None:
        """Switch the network allow list to another phase of the policy (e.g. from
        ``setup``, which may reach package mirrors, to ``agent``)."""
        self._check_open()
        if phase not in self.policy.network.phases:
            known = ", ".join(sorted(self.policy.network.phases))
            raise ValueError(f"unknown network phase {phase!r} (policy has: {known})")
        if self._network is not None:
            self._network.set_phase(phase)
        self._lifecycle("network_phase", phase=phase)

    # -- context management -------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self._ended or "open")
        return f"<Session {self.session_id} run={self.run_id} episode={self.episode_id} {state}>"

    # -- the pipeline (runs on the session's executor) ----------------------------------

    def event(self, kind: EventKind, *, call: _Call | CallRef | None = None,
              pid: int | None = None, **fields: Any) -> Event:
        """Build an Event attributed to this session (and to ``call`` if given)."""
        ref = call.ref if isinstance(call, _Call) else call
        return make_event(self._view, kind, call=ref, pid=pid, **fields)

    def ingest(self, event: Event) -> list[Verdict]:
        """Put an event through the pipeline and wait for its verdicts (with the
        actions taken). Thread-safe; observers use their ``EventSink`` instead, which
        never waits. If anything in the path fails, the session is terminated and the
        failure re-raised: bastion never carries on blind."""
        return self._executor.call(self._process, event)

    def _ingest_command(self, event: Event) -> list[Verdict]:
        """``ingest`` for a call's command, whose records are flushed before the
        command runs: their commit starts now, so it overlaps the call's launch
        instead of lingering (``TrailConfig.linger``) until that flush."""
        verdicts = self.ingest(event)
        commit_soon = getattr(self._recorder, "commit_soon", None)
        if commit_soon is not None:
            commit_soon()
        return verdicts

    def _process(self, event: Event) -> list[Verdict]:
        assert self._executor.on_thread(), "the pipeline runs on the session's executor only"
        try:
            return self._ingest(event)
        except BastionError as exc:
            self._fail_closed(f"{type(exc).__name__}: {exc}")
            raise
        except Exception as exc:
            self._fail_closed(f"internal error while handling {event.kind.value}: {exc!r}")
            raise

    def _ingest(self, event: Event) -> list[Verdict]:
        if event.kind is EventKind.EXEC and self.trusted_files and self.trusted_files.matches(
                str(event.fields.get("proc.exe") or ""), event.pid):
            event = replace(event, fields={**event.fields, "proc.trusted": True})
        self.events.append(event)
        self._recorder.append_event(event)
        verdicts = self._engine.evaluate(event)
        taken: list[Verdict] = []
        for verdict in verdicts:
            commands = self._planner.plan(verdict, event, self._view)
            self._recorder.append_verdict(verdict)
            if any(isinstance(c, DESTRUCTIVE) for c in commands):
                self._recorder.flush()  # nothing is done about a verdict not yet durable
            verdict = self._carry_out(verdict, commands)
            self.verdicts.append(verdict)
            self._charge(verdict)
            if self._webhook is not None:
                self._alert(verdict)
            taken.append(verdict)
        if event.kind is EventKind.EXEC:
            nested = self._nested_command(event)
            if nested is not None:
                taken.extend(self._ingest(nested))
        return taken

    _NESTED_LIMIT = 4096  # distinct inline programs judged per session

    def _nested_command(self, event: Event) -> Event | None:
        """The command event for code a process of a call handed to a shell (``-c``)
        or an interpreter (``python3 -c``, ``perl -e``), or for the argv of a renamed
        copy of a system program (under its real name): what the typed command only
        made at run time (decoded from a file, spelled with chr) is judged by the same
        analyser and packs, charged to the call and the process (``cmd.via``: exec).
        The call's own command line, harness-trusted programs and code already judged
        in this call are skipped."""
        if event.call_id is None or event.fields.get("proc.trusted"):
            return None
        argv = inline_code(event.fields)
        if argv is None and event.fields.get("proc.renamed"):
            # a renamed copy (`cp /usr/bin/socat .cache/sc`) was judged, where it was
            # typed, as a program of no known kind: its argv as exec'd (file-read
            # addresses and all) is judged as the real program's
            raw = [str(a) for a in event.fields.get("proc.args") or []]
            if raw:
                argv = [str(event.fields.get("proc.name") or raw[0]), *raw[1:]]
        if argv is None:
            return None
        with self._lock:
            call = self._calls.get(event.call_id)
        if call is None:
            return None
        args = [str(a) for a in event.fields.get("proc.args") or []]
        if call.command in (args[-1], shlex.join(args)) and names_code_runner(args[0]):
            # the call's own line, judged before it ran as this shell or interpreter
            # (a renamed copy's line was judged as an unknown program: judged again)
            return None
        key = (call.call_id, tuple(argv))
        if key in self._nested_seen or len(self._nested_seen) >= self._NESTED_LIMIT:
            return None
        self._nested_seen.add(key)
        # no CallMemory: what the code writes or fetches is not the agent's next line
        fields = self._analyse(argv, remember=False)
        return self.event(EventKind.COMMAND, call=call, pid=event.pid,
                          **{**fields, "cmd.via": "exec"})

    def _carry_out(self, verdict: Verdict, commands: list[Command]) -> Verdict:
        """Execute a plan; record one ``action`` event per command, then the lifecycle
        changes the commands caused. Returns the verdict with the action taken."""
        outer, self._deferred = self._deferred, []
        done: list[tuple[Action, str, bool]] = []
        try:
            for command in commands:
                done.append(self._execute(command, verdict))
        finally:
            deferred, self._deferred = self._deferred, outer
        for action, detail, ok in done:
            event = self.event(EventKind.ACTION, call=self._call_ref(verdict.call_id),
                               pid=verdict.pid, **{
                                   "action.name": action.value,
                                   "action.target": verdict.call_id or (
                                       str(verdict.pid) if verdict.pid else self.session_id),
                                   "action.rule": verdict.rule_id,
                                   "action.verdict": verdict.id,
                                   "action.ok": ok,
                                   "action.detail": detail,
                               })
            self.events.append(event)
            self._recorder.append_event(event)
        for event in deferred:
            self._ingest(event)
        if not done:
            return verdict
        action, detail, _ok = done[0]
        if action is verdict.action and not detail:
            return verdict
        return replace(verdict, action=action, evidence={**verdict.evidence, "response": detail})

    def _execute(self, command: Command, verdict: Verdict) -> tuple[Action, str, bool]:
        """Carry out one command; when it cannot be done, its ``otherwise``."""
        if command.action in _CONTAINING and (self._closed or self._ended):
            return Action.NONE, f"not carried out: {self._ended or 'session closed'}", False
        outcome = self._do(command, verdict)
        if not isinstance(outcome, str):
            return outcome
        if command.otherwise is None:
            return command.action, f"{outcome}; nothing else to do", False
        action, detail, ok = self._execute(command.otherwise, verdict)
        return action, f"{command.action.value} impossible ({outcome}); {detail}", ok

    def _do(self, command: Command, verdict: Verdict) -> tuple[Action, str, bool] | str:
        """One command; a string says why it could not be carried out."""
        cgroup = self.sandbox.cgroup if self.sandbox is not None else None
        if isinstance(command, Refuse):
            return Action.DENY, command.reason, True
        if isinstance(command, Alert):
            where = f"sent to {self._webhook.url}" if self._webhook else "recorded (no webhook configured)"
            return Action.ALERT, where, True
        if isinstance(command, KillCall):
            with self._lock:
                call = self._calls.get(command.call_id)
            if call is None or call.cgroup is None or cgroup is None:
                return f"call {command.call_id} has no processes"
            cgroup.kill_call(call.cgroup)
            return Action.KILL, f"killed every process of call {command.call_id}", True
        if isinstance(command, KillTree):
            if cgroup is None:
                return "no sandbox"
            killed = kill_tree(command.pid, cgroup.pids, self._view.owns_cgroup)
            if killed:
                return Action.KILL, f"killed pids {killed}", True
            return Action.KILL, f"pid {command.pid} already gone", True
        if isinstance(command, KillSocketOwner):
            pid = socket_owner(cgroup.pids(), command.src_ip, command.src_port) if cgroup else None
            if pid is None:
                return f"no session process holds {command.src_ip}:{command.src_port}"
            owner = self._view.call_for_cgroup(read_cgroup(pid) or "")
            if owner is not None:
                return self._do(KillCall(owner.call_id, otherwise=KillTree(pid)), verdict)
            return self._do(KillTree(pid), verdict)
        if isinstance(command, Cut):
            if self._network is None:
                return "no gateway"
            if not self._network.cut(command.conn_id):
                return f"connection {command.conn_id!r} not open"
            return Action.CUT, f"connection {command.conn_id} closed", True
        if isinstance(command, Freeze):
            try:
                self.freeze()
            except BastionError as exc:
                return f"freeze failed ({exc})"
            return Action.FREEZE, "every process of the session frozen", True
        if isinstance(command, Terminate):
            self.terminate(command.reason)
            return Action.TERMINATE, "session terminated", True
        if isinstance(command, Quarantine):
            return self._quarantine(command, verdict)
        raise InternalError(f"unknown command {command!r}")

    def _quarantine(self, command: Quarantine, verdict: Verdict) -> tuple[Action, str, bool]:
        with contextlib.suppress(BastionError):
            self.freeze()  # evidence is taken from a session that stands still
        cgroup = self.sandbox.cgroup if self.sandbox is not None else None
        try:
            dest = quarantine(root=self.host.state.root, session_id=self.session_id,
                              # an image session's evidence is its upper layer
                              workspace=(self.image_view.overlay.upper if self.image_view
                                         is not None else self.workspace),
                              pids=cgroup.pids() if cgroup else [],
                              verdict=verdict.to_dict())
        except OSError as exc:
            self.terminate(f"{command.reason} (quarantine failed: {exc})")
            return Action.TERMINATE, f"quarantine failed ({exc}); session terminated", True
        self.terminate(f"{command.reason} (quarantined)")
        return Action.QUARANTINE, f"evidence kept in {dest}; session terminated", True

    def _alert(self, verdict: Verdict) -> None:
        assert self._webhook is not None
        if verdict.action is Action.NONE:
            return
        payload = {"type": "bastion.verdict", "verdict": verdict.to_dict(),
                   "session": self.session_id, "run_id": self.run_id,
                   "episode_id": self.episode_id}

        def failed(message: str) -> None:  # on the webhook's thread: submit only
            self._sink.submit(self.event(EventKind.TELEMETRY, **{
                "telemetry.sensor": "webhook", "telemetry.reason": message}))

        self._webhook.send(payload, failed)

    def _call_ref(self, call_id: str | None) -> CallRef | None:
        with self._lock:
            call = self._calls.get(call_id or "")
        return call.ref if call is not None else None

    def _charge(self, verdict: Verdict) -> None:
        """File a verdict under its call; a verdict on a call whose result was already
        returned (its background process misbehaved later) goes out with the next one."""
        with self._lock:
            call = self._calls.get(verdict.call_id or "")
            if call is not None:
                call.verdicts.append(verdict)
                if call.finished:
                    self._undelivered.append(verdict)
                elif verdict.action in _STOPPING:
                    call.stop_reason = call.stop_reason or f"{verdict.rule_id}: {verdict.message}"
                    if self.sandbox is not None:
                        self.sandbox.poke()  # the running call stops now, not at its next look
            else:
                self._undelivered.append(verdict)

    def _finish(self, call: _Call, late: list[Verdict]) -> list[Verdict]:
        """Mark the call answered; return every verdict its result must carry."""
        with self._lock:
            self._quiet = False  # until _note_quiet has looked
            call.finished = True
            late = [*late, *self._undelivered]
            self._undelivered = []
            verdicts = [*late, *call.verdicts]
        self._note_quiet()
        return verdicts

    def _lifecycle(self, state: str, call: _Call | None = None, *, wait: bool = True,
                   **fields: Any) -> None:
        """Record a lifecycle change. On the executor while a plan is carried out it
        is recorded after the plan's actions; elsewhere it is submitted, and waited
        for unless ``wait`` is False (a sensor thread must never wait)."""
        event = self.event(EventKind.LIFECYCLE, call=call, **{"life.state": state}, **fields)
        if self._executor.on_thread():
            if self._deferred is not None:
                self._deferred.append(event)
            else:
                self._process(event)
            return
        future = self._executor.submit(self._process, event)
        if wait:
            with contextlib.suppress(SessionClosed):  # closed meanwhile: record finalised
                future.result()

    def settle(self) -> None:
        """Wait until everything submitted so far (by the sensors, the gateway, this
        thread) has been through the pipeline: its verdicts are in ``verdicts`` and
        its actions taken. Returns at once on a closed session."""
        with contextlib.suppress(SessionClosed):
            self._executor.call(lambda: None)


    def _flush_audit(self, *, checkpoint: bool = False) -> None:
        self._recorder.flush(checkpoint=checkpoint)

    def _fail_closed(self, reason: str) -> None:
        """Stop the agent: kill everything and refuse further calls."""
        self._ended = self._ended or f"session stopped: {reason}"
        if self.sandbox is not None:
            with contextlib.suppress(Exception):
                self.sandbox.kill()

    def _supervisor_lost(self, reason: str) -> None:
        """The sandbox's supervisor was stopped, killed or went silent (the sandbox
        is already killed, see sandbox/watch.py): a monitor_tamper verdict, then the
        session ends. From any thread; never waits."""
        with self._lock:
            busy = any(not c.finished for c in self._calls.values())
        if self._quiet and not busy:
            # no process of the agent's existed since the last call ended with none
            # left: the agent cannot have done it (node, host or operator did)
            self.infra_failure = f"sandbox lost while no agent process ran: {reason}"
            with contextlib.suppress(BastionError):
                self._lifecycle("infra_failed", wait=False, reason=reason)
            self._contain(f"infra_failed: {reason}")
            return
        self._adopt(supervisor_lost_verdict(self._view, reason), wait=False)
        self._contain(f"monitor_tamper.supervisor_lost: {reason}")

    def _note_quiet(self) -> None:
        """After a call is answered: is any process of the agent's left? Quiet means
        every call answered, every call cgroup empty, and only *then* the supervisor
        still alive (checked synchronously, not by the watch thread), so a background
        process that killed it and exited cannot pass for a quiet sandbox. Until the
        next call starts nothing of the agent's can exist, so a loss of the sandbox
        meanwhile is an infrastructure failure, not tampering. The supervisor's
        limits, priority and affinity are compared too: a change an earlier call made
        to them (prlimit/renice) outlives the process that made it."""
        with self._lock:
            busy = any(not c.finished for c in self._calls.values())
            cgroups = [(c.call_id, c.cgroup) for c in self._calls.values()
                       if c.cgroup is not None and c.call_id not in self._retired]
        quiet = not busy and self._ended is None
        if quiet:
            # every call has been answered: a call cgroup seen empty now stays empty
            # (nothing enters an old call's cgroup; new processes go to a new call's),
            # so it is not read again: the cost per call does not grow with the episode
            for call_id, cgroup in cgroups:
                try:
                    procs = (cgroup / "cgroup.procs").read_text().split()
                except OSError:  # removed: nothing of it runs
                    procs = []
                if procs:
                    quiet = False
                    break
                self._retired.add(call_id)
        sandbox = self.sandbox
        if quiet and sandbox is not None:
            quiet = (sandbox.lost is None and sandbox.supervisor_pid is not None
                     and sandbox._sup_pidfd >= 0
                     and watcher().problem(sandbox.supervisor_pid,
                                           sandbox._sup_pidfd) is None)
        self._quiet = quiet

    def _adopt(self, verdict: Verdict, *, wait: bool) -> None:
        """Record and charge a verdict that bastion's containment reached itself
        (containment.py) rather than the engine."""
        def record() -> None:
            self._recorder.append_verdict(verdict)
            self.verdicts.append(verdict)
            self._charge(verdict)

        if wait:
            self._executor.call(record)  # inline when already on the executor
        else:
            self._executor.submit(record)

    def _contain(self, reason: str) -> None:
        """An observer can no longer watch this session: end it now, from whatever
        thread noticed, and record why without waiting for the pipeline."""
        if self._closed:
            return
        self._ended = self._ended or f"session terminated: {reason}"
        self._fail_closed(reason)
        with contextlib.suppress(BastionError):
            self._lifecycle("terminated", wait=False, reason=reason)

    # -- tool calls -------------------------------------------------------------------

    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        step: int | None = None,
        call_id: str | None = None,
        timeout: float | None = None,
        stdin: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ExecResult:
        """Run one tool call in the sandbox and return its result.

        ``cmd`` is a shell command line (run with bash) or an argv list. ``step`` and
        ``call_id`` attribute everything the call causes; defaults are a running
        counter and ``c<step>``.
        """
        return drive(self._exec_steps(cmd, step=step, call_id=call_id, timeout=timeout,
                                      stdin=stdin, env=env, cwd=cwd))

    def _exec_steps(
        self,
        cmd: str | Sequence[str],
        *,
        step: int | None = None,
        call_id: str | None = None,
        timeout: float | None = None,
        stdin: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> Steps[ExecResult]:
        """``exec`` as steps (sandbox/steps.py): the one code path behind ``exec`` and
        ``AsyncSession.exec``, which differ only in how they wait."""
        # bytes decoded (surrogateescape), call_id/step/timeout checked: see calls.py
        cmd = check_call(cmd, step=step, call_id=call_id, timeout=timeout)
        self._check_usable()
        command = cmd if isinstance(cmd, str) else shlex.join(cmd)
        analysis = yield Blocking(lambda: self._analyse(
            analysable(command) if isinstance(cmd, str) else [analysable(a) for a in cmd]))
        return (yield from self._call_steps(cmd, command, analysis, step=step,
                                            call_id=call_id, timeout=timeout, stdin=stdin,
                                            env=env, cwd=cwd))

    def _call_steps(self, cmd: str | Sequence[str], command: str, analysis: dict[str, Any], *,
                    step: int | None, call_id: str | None, timeout: float | None,
                    stdin: str | bytes | None, env: Mapping[str, str] | None,
                    cwd: str | None) -> Steps[ExecResult]:
        self._check_usable()
        with self._lock:
            if step is None:
                step = self._step_counter
            self._step_counter = max(self._step_counter, step + 1)
            call_id = call_id or f"c{step}"
            if call_id in self._calls:
                raise ValueError(f"call_id {call_id!r} was already used in this session")
            call = _Call(call_id, step, command)
            self._calls[call_id] = call
            self._quiet = False  # the agent may have processes again
            late = self._undelivered
            self._undelivered = []
        argv = self._argv(cmd)
        limit = min(timeout or self.policy.sandbox.limits.exec_timeout,
                    self.policy.sandbox.limits.exec_timeout)
        self._lifecycle("call_start", call, wait=False, **{"cmd.raw": command})
        try:
            # waited for: a command is judged (and refused) before it runs
            event = self.event(EventKind.COMMAND, call=call, **analysis)
            pre: list[Verdict] = yield Blocking(lambda: self._ingest_command(event))
        except CallCancelled:
            self._abandon(call, late)
            raise
        refused = [v for v in pre if v.action in _STOPPING]
        if refused or self._ended:
            return (yield Blocking(lambda: self._denied(call, refused, late)))

        image_env = self.image_view.env if self.image_view is not None else {}
        env_full = {**_DEFAULT_ENV, **image_env, **self.policy.sandbox.env, **(env or {})}
        data = stdin.encode() if isinstance(stdin, str) else stdin
        assert self.sandbox is not None
        oom_before = self.sandbox.cgroup.oom_kills() if self.sandbox.cgroup else 0
        try:
            raw = yield from self.sandbox.call_steps(
                argv,
                env=env_full,
                cwd=cwd or (self.image_view.cwd if self.image_view is not None else WORKSPACE),
                stdin=data,
                timeout=max(0.001, min(limit, self._deadline - time.monotonic())),
                on_started=lambda handle: self._started(call, handle),
                should_stop=lambda: call.stop_reason or self._ended,
            )
        except CallCancelled:  # before the sandbox sent anything: nothing ran
            self._abandon(call, late)
            raise
        except SessionBroken as exc:
            if self._ended and self.sandbox.broken_reason in ("killed", "supervisor gone"):
                # the policy ended the episode while this call ran (terminate, quarantine):
                # that is an outcome for the agent, not an error for the caller
                return (yield Blocking(lambda: self._ended_during(call, late)))
            self._fail_closed(str(exc))
            raise
        result = yield Blocking(lambda: self._conclude(call, raw, oom_before, late))
        # not waited for: everything before it is settled, and it is recorded before
        # anything that follows (close() waits for its own "closing" after it)
        why = {"reason": CANCELLED} if raw.interrupted == CANCELLED else {}
        self._lifecycle("call_end", call, wait=False, **{"proc.exit_code": result.exit_code,
                                                         "outcome": result.outcome.value},
                        **why)
        return result

    def _conclude(self, call: _Call, raw: RawResult, oom_before: int,
                  late: list[Verdict]) -> ExecResult:
        """The call's result, once the limits it hit are judged and every verdict on
        what it did so far is charged (one blocking step: it reads the cgroups)."""
        assert self.sandbox is not None
        oom = bool(self.sandbox.cgroup and self.sandbox.cgroup.oom_kills() > oom_before)
        for full in self.sandbox.disk_full():
            self._adopt(disk_limit_verdict(self._view, call.ref, full), wait=True)
        self.host.call_ended(self._view, call.ref)  # what only a look at the end shows
        self.settle()
        return self._result(call, raw, oom, late)

    def _ended_during(self, call: _Call, late: list[Verdict]) -> ExecResult:
        self.settle()
        return self._denied(call, [v for v in call.verdicts if v.action is not Action.NONE],
                            late)

    def _abandon(self, call: _Call, late: list[Verdict]) -> None:
        """The caller cancelled the call before its command ran: say so in the trail;
        the verdicts it would have carried go out with the next call."""
        with self._lock:
            call.finished = True
            self._undelivered = [*late, *call.verdicts, *self._undelivered]
        with contextlib.suppress(BastionError):
            self._lifecycle("call_end", call, wait=False,
                            outcome=Outcome.KILLED.value, reason=CANCELLED)

    def _argv(self, cmd: str | Sequence[str]) -> list[str]:
        if isinstance(cmd, str):
            if self.image_view is not None:
                return [self.image_view.shell, "-c", cmd]
            return [_shell(self.policy.sandbox.rootfs), "-c", cmd]
        if not cmd:
            raise ValueError("empty command")
        return list(cmd)

    def _analyse(self, command: str | list[str], *, remember: bool = True) -> dict[str, Any]:
        """Static analysis of a command before it runs (the command sensor): what it
        would run once quoting, variables, eval and encoded payloads are resolved. An
        argv list is analysed as argv (no shell parses it), not as one joined line.
        ``remember=False`` for code a running process hands on (see _nested_command): it
        is judged without the session's CallMemory and leaves nothing in it."""
        memory = self._call_memory if remember else None
        try:
            return analyze_command(command, memory) if isinstance(command, str) \
                else analyze_argv(command, memory)
        except Exception as exc:  # analyze_command promises not to raise: a bug
            self._fail_closed(f"command analysis failed: {exc!r}")
            raise InternalError(f"command analysis failed on {command!r}") from exc

    def _started(self, call: _Call, handle: CallHandle) -> Steps[None]:
        """The call's process exists, sits in its cgroup and waits for our go."""
        with self._lock:
            call.cgroup = handle.cgroup
            call.host_pid = handle.host_pid
            self._calls_by_cgroup[handle.cgroup.name] = call
        # Nothing the agent asked for runs before it is durably recorded. The group
        # commit started when the records were queued, so this wait overlaps the fork.
        try:
            yield Blocking(self._flush_audit)
        except BastionError as exc:
            self._fail_closed(f"{type(exc).__name__}: {exc}")
            raise SessionBroken(self._ended or str(exc)) from exc

    def _result(self, call: _Call, raw: RawResult, oom: bool, late: list[Verdict]) -> ExecResult:
        status = raw.status
        signal_no: int | None = None
        if status is None:
            exit_code = 137
            signal_no = 9
        elif os.WIFSIGNALED(status):
            signal_no = os.WTERMSIG(status)
            exit_code = 128 + signal_no
        else:
            exit_code = os.waitstatus_to_exitcode(status)
        reason: str | None = None
        if raw.timed_out:
            outcome = Outcome.TIMEOUT
            reason = f"timed out after {raw.duration:.1f}s"
        elif self._ended:
            outcome = Outcome.TERMINATED
            reason = self._ended
        elif raw.interrupted or call.stop_reason:
            outcome = Outcome.KILLED
            reason = raw.interrupted or call.stop_reason
        elif oom and signal_no == _signal.SIGKILL:
            outcome = Outcome.KILLED
            reason = "killed: the session's memory limit was reached"
        elif exit_code == 0:
            outcome = Outcome.OK
        else:
            outcome = Outcome.EXIT_NONZERO
        return ExecResult(
            stdout=raw.stdout.decode(errors="replace"),
            stderr=raw.stderr.decode(errors="replace"),
            exit_code=exit_code,
            duration=raw.duration,
            timed_out=raw.timed_out,
            outcome=outcome,
            call_id=call.call_id,
            step=call.step,
            signal=signal_no,
            truncated=raw.truncated,
            reason=reason,
            verdicts=self._finish(call, late),
        )

    def _denied(self, call: _Call, refused: list[Verdict], late: list[Verdict]) -> ExecResult:
        result = self._refusal(call, refused, late)
        with contextlib.suppress(BastionError):
            self._lifecycle("call_end", call, **{"proc.exit_code": result.exit_code,
                                                 "outcome": result.outcome.value})
        return result

    def _refusal(self, call: _Call, refused: list[Verdict], late: list[Verdict]) -> ExecResult:
        if refused:
            worst = max(refused, key=lambda v: v.severity)
            reason = (f"bastion denied this command ({worst.rule_id}, {worst.severity}): "
                      f"{worst.message}")
            outcome = Outcome.DENIED if not self._ended else Outcome.TERMINATED
        else:
            reason = self._ended or "session ended"
            outcome = Outcome.TERMINATED
        return ExecResult(
            stdout="",
            stderr=reason + "\n",
            exit_code=126,
            duration=0.0,
            timed_out=False,
            outcome=outcome,
            call_id=call.call_id,
            step=call.step,
            reason=reason,
            verdicts=self._finish(call, late),
        )

    def _check_usable(self) -> None:
        if self._closed:
            raise SessionClosed(f"session {self.session_id} is closed")
        if self._ended:
            raise SessionBroken(self._ended)
        if time.monotonic() > self._deadline:
            self.terminate("the session timeout was reached")
            raise SessionBroken(self._ended or "session timeout")
        if self.sandbox is None or not self.sandbox.alive:
            reason = self.sandbox.broken_reason if self.sandbox else "no sandbox"
            self._ended = f"the sandbox is gone ({reason})"
            raise SessionBroken(self._ended)

    # -- control ----------------------------------------------------------------------

    def freeze(self) -> None:
        """Stop every process of the session where it stands (cgroup freezer)."""
        self._check_open()
        assert self.sandbox is not None
        self.sandbox.freeze()
        self.frozen = True
        self._lifecycle("frozen")

    def thaw(self) -> None:
        self._check_open()
        assert self.sandbox is not None
        self.sandbox.thaw()
        self.frozen = False
        self._lifecycle("thawed")

    def kill(self) -> None:
        """Kill every process of the session. The session refuses further calls."""
        self._check_open()
        self.terminate("killed by its owner")

    def terminate(self, reason: str) -> None:
        """End the episode: kill everything, refuse further calls, say why."""
        if self._ended is None:
            self._ended = f"session terminated: {reason}"
        if self.sandbox is not None:
            self.sandbox.kill()
        with contextlib.suppress(BastionError):
            self._lifecycle("terminated", reason=reason)

    def kill_call(self, call_id: str) -> bool:
        """Kill every process charged to one call (its cgroup), background ones too."""
        with self._lock:
            call = self._calls.get(call_id)
        if call is None or call.cgroup is None or self.sandbox is None or not self.sandbox.cgroup:
            return False
        self.sandbox.cgroup.kill_call(call.cgroup)
        return True

    def live_calls(self) -> dict[str, int]:
        """Tool calls that still have running processes (e.g. a background miner that
        was not stopped), with how many. Empty when everything the agent started is
        gone."""
        with self._lock:
            cgroups = [(c.call_id, c.cgroup) for c in self._calls.values() if c.cgroup]
        live: dict[str, int] = {}
        for call_id, cgroup in cgroups:
            try:
                count = len((cgroup / "cgroup.procs").read_text().split())
            except OSError:  # ENOENT, or ENODEV while it is being removed
                continue  # the call's cgroup was removed: nothing of it runs
            if count:
                live[call_id] = count
        return live

    @property
    def view(self) -> _View:
        """The read-only view of this session that its observers get (``Watched``)."""
        return self._view

    @property
    def ended(self) -> str | None:
        """Why the session refuses further calls, or None while it is usable."""
        return self._ended

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosed(f"session {self.session_id} is closed")

    def close(self) -> None:
        """Kill every process, remove the cgroups and the workspace. Idempotent."""
        if self._closed:
            return
        try:
            # observers first, so what they report at the end (the file sensor's
            # end-of-episode diff) is in the trail before the closing checkpoint
            with contextlib.suppress(Exception):
                self.host.unregister(self._view)
            if self._network is not None:  # connections still being classified go in too
                with contextlib.suppress(Exception):
                    self._network.record_pending()
            if self.image_view is not None:  # what the agent changed in the image
                with contextlib.suppress(BastionError):
                    for fields in self.image_view.diff_fields():
                        self.ingest(self.event(EventKind.FILE_DIFF, **fields))
            with contextlib.suppress(BastionError):
                self._lifecycle("closing")
                self._flush_audit(checkpoint=True)  # the episode ends on a checkpoint
        finally:
            self._closed = True
            self._cleanup_resources()

    def _cleanup_resources(self) -> None:
        self._executor.close()  # runs what is queued; later submissions are refused
        if self.sandbox is not None:
            self.sandbox.close()
        if self._network is not None:
            self._network.close()
        if self._webhook is not None:
            self._webhook.close()
        if self._owns_recorder:
            release_trail(self._recorder)  # type: ignore[arg-type]
        if self.image_view is not None:
            self.image_view.close()  # unmount before the upper layer goes with self.dir
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)  # a configured workspace is kept

    # -- a harness's own executables (see trusted_files.py) ----------------------------

    @functools.cached_property
    def trusted_files(self) -> TrustedFiles:
        scratch = self.dir / "scratch"
        return TrustedFiles({"/tmp": scratch / "tmp", "/var/tmp": scratch / "var-tmp",
                             "/dev/shm": scratch / "shm", WORKSPACE: self.workspace})

    def trust_executable(self, path: str, sha256: str) -> None:
        """Declare the file a harness itself wrote into the sandbox at ``path`` (with
        content digest ``sha256``) as the harness's program: running exactly that file,
        unchanged, is not "a program run from a temp location". Recorded in the trail."""
        self._check_open()
        self.trusted_files.add(path, sha256)
        self._lifecycle("trusted_file", **{"file.path": path, "file.sha256": sha256.lower()})

    # -- files (through the choke point) ----------------------------------------------

    def write_file(self, path: str, content: str | bytes, *, step: int | None = None,
                   call_id: str | None = None) -> ExecResult:
        """A file-write tool call: runs `cat > path` in the sandbox (creating missing
        parent directories first) so it is observed, attributed and checked like any
        other call.

        The content is judged like a command: it is analysed as the heredoc an agent
        would type to write it (so an ssh config or a script is visible to the rules),
        and recorded in the trail (its sha256 always, the text itself when it is small
        text)."""
        return drive(self._write_steps(path, content, step=step, call_id=call_id))

    def _write_steps(self, path: str, content: str | bytes, *, step: int | None = None,
                     call_id: str | None = None) -> Steps[ExecResult]:
        check_call(path, step=step, call_id=call_id, timeout=None)
        self._check_usable()
        data = content.encode() if isinstance(content, str) else content
        command = f"cat > {shlex.quote(path)}"
        parent = posixpath.dirname(path.rstrip("/"))
        if parent and parent != "/":  # as agents' edit tools do (SWE-agent, Inspect)
            command = f"mkdir -p -- {shlex.quote(parent)} && {command}"
        analysis = yield Blocking(lambda: self._analyse_write(path, data))
        return (yield from self._call_steps(command, command, analysis, step=step,
                                            call_id=call_id, timeout=None, stdin=data,
                                            env=None, cwd=None))

    def _analyse_write(self, path: str, data: bytes) -> dict[str, Any]:
        fields: dict[str, Any] = {"file.path": path, "file.size": len(data),
                                  "file.sha256": hashlib.sha256(data).hexdigest()}
        try:
            text: str | None = data.decode()
        except UnicodeDecodeError:
            text = None
        if text is None or "\0" in text or len(data) > _ANALYSED_TEXT:
            return {**self._analyse(f"cat > {shlex.quote(path)}"), **fields}
        if len(data) <= _RECORDED_TEXT:
            fields["file.content"] = text
        marker = "BASTION_EOF"
        while marker in text:
            marker += "_"
        body = text if text.endswith("\n") else text + "\n"
        heredoc = f"cat > {shlex.quote(path)} <<'{marker}'\n{body}{marker}"
        return {**self._analyse(heredoc), **fields}

    def read_file(self, path: str, *, step: int | None = None,
                  call_id: str | None = None) -> ExecResult:
        return self.exec(["cat", "--", path], step=step, call_id=call_id)
