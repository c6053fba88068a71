"""``Session``: one sandbox per episode, and the single choke point for tool calls.

Every tool call goes through ``Session.exec``: it is tagged with its step and call id,
analysed before it runs, run in the session's long-lived sandbox inside its own call
cgroup (so everything it starts stays charged to it), and answered with an
``ExecResult`` carrying the verdicts charged to that call.

Everything the session observes flows one way through ``_ingest``:

    sensor -> Event -> audit -> engine -> Verdict -> responder -> action -> audit

and any failure in that path ends the session (fail closed) rather than letting the
agent carry on unobserved.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shlex
import shutil
import signal as _signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .analysis import analyze_command
from .audit import TrailConfig, lease_trail, release_trail
from .engine.build import build_engine
from .errors import BastionError, InternalError, SessionBroken, SessionClosed
from .events import Action, Event, EventKind, Verdict
from .gateway import NetworkAttachment, attach_network
from .host import Host
from .policy import Policy
from .respond import Responder as DefaultResponder
from .results import ExecResult, Outcome
from .sandbox import CallHandle, RawResult, Sandbox
from .sandbox.bwrap import WORKSPACE
from .sandbox.cleanup import owner_record
from .state import check_traversable

__all__ = ["Engine", "EventRecorder", "Responder", "Session"]

_DEFAULT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": WORKSPACE,
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "USER": "agent",
}


@functools.lru_cache(maxsize=8)
def _shell(rootfs: str) -> str:
    """Agents write bash; fall back to sh on a root filesystem without it."""
    return "/bin/bash" if os.path.exists(os.path.join(rootfs, "bin/bash")) else "/bin/sh"


class EventRecorder(Protocol):
    """The audit trail as the session sees it. Raising from any method stops the
    session: an event that cannot be recorded must not be acted upon."""

    def append_event(self, event: Event) -> object: ...

    def append_verdict(self, verdict: Verdict) -> object: ...

    # Optional, used when present (the audit trail has both):
    #   append_policy(policy, *, episode_id) -- store the policy text once per hash
    #   flush(*, checkpoint=False)           -- return once everything so far is durable


class Engine(Protocol):
    """Rules and detectors: Events in, Verdicts out. Never acts."""

    policy_hash: str

    def evaluate(self, event: Event) -> list[Verdict]: ...


class Responder(Protocol):
    """Carries out what a verdict calls for; returns the verdict with the action taken
    and the ``action`` events it produced. Never detects."""

    def respond(self, verdict: Verdict, session: Session) -> tuple[Verdict, list[Event]]: ...


class _Call:
    """Book-keeping for one tool call, alive for as long as any of its processes."""

    __slots__ = ("call_id", "step", "cgroup", "host_pid", "verdicts", "stop_reason", "command",
                 "finished")

    def __init__(self, call_id: str, step: int | None, command: str) -> None:
        self.call_id = call_id
        self.step = step
        self.command = command
        self.cgroup: Path | None = None
        self.host_pid: int | None = None
        self.verdicts: list[Verdict] = []
        self.stop_reason: str | None = None
        self.finished = False  # its ExecResult was returned; later verdicts are "late"


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
        engine: Engine | None = None,
        responder: Responder | None = None,
    ) -> None:
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
        # acts, the run's audit trail records. Each can be replaced (tests, benchmarks).
        self._engine: Engine = engine if engine is not None else build_engine(policy)
        self._owns_responder = responder is None
        self._responder: Responder = responder or DefaultResponder(policy.response)
        # Appends are queued and group-committed; exec() flushes before a command runs,
        # so nothing the agent does can precede the durable record of what it asked.
        self._owns_recorder = recorder is None
        self._recorder: EventRecorder = recorder or lease_trail(
            self.host.state.root, self.run_id, config=TrailConfig(durable_appends=False))
        self._lock = threading.RLock()
        self._calls: dict[str, _Call] = {}
        self._calls_by_cgroup: dict[str, _Call] = {}
        self._undelivered: list[Verdict] = []  # late verdicts, delivered with the next call
        self._closed = False
        self._ended: str | None = None  # why the session refuses further calls
        self._step_counter = 0
        self.created_at = time.time()
        self._deadline = time.monotonic() + policy.sandbox.limits.session_timeout
        self.frozen = False
        self.sandbox: Sandbox | None = None
        self.events: list[Event] = []  # kept in memory for the session's lifetime
        self.verdicts: list[Verdict] = []
        self._network: NetworkAttachment | None = None
        self._setup_dirs()
        try:
            self._network = attach_network(self)
            cut = getattr(self._network, "cut", None)
            if self._owns_responder and cut is not None:
                self._responder.set_cutter(self._network)  # type: ignore[attr-defined]
            self.sandbox = Sandbox(
                policy.sandbox,
                name=self.session_id,
                workspace=self.workspace,
                state_dir=self.host.state.root,
                cgroup_host=self.host.cgroups,
                host_uid=self.host_uid,
                netns=self._network.netns_path if self._network is not None else None,
            )
            self.sandbox.start()
            self.host.register(self)
            if hasattr(self._recorder, "append_policy"):
                self._recorder.append_policy(policy, episode_id=self.episode_id)
            self._lifecycle("created", policy=policy.name, policy_hash=policy.hash,
                            unenforced=",".join(self.host.unenforced_limits()))
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

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self._ended or "open")
        return f"<Session {self.session_id} run={self.run_id} episode={self.episode_id} {state}>"

    # -- the pipeline -----------------------------------------------------------------

    def event(self, kind: EventKind, *, call: _Call | None = None, pid: int | None = None,
              **fields: Any) -> Event:
        """Build an Event attributed to this session (and to ``call`` if given)."""
        return Event(
            kind=kind,
            session_id=self.session_id,
            run_id=self.run_id,
            episode_id=self.episode_id,
            step=call.step if call else None,
            call_id=call.call_id if call else None,
            pid=pid,
            fields=fields,
        )

    def ingest(self, event: Event) -> list[Verdict]:
        """Record an event, evaluate it and act on the verdicts. Thread-safe.

        Sensors call this. If anything in the path fails, the session is terminated
        and the failure re-raised: bastion never carries on blind.
        """
        with self._lock:
            try:
                return self._ingest(event)
            except BastionError as exc:
                self._fail_closed(f"{type(exc).__name__}: {exc}")
                raise
            except Exception as exc:
                self._fail_closed(f"internal error while handling {event.kind.value}: {exc!r}")
                raise

    def _ingest(self, event: Event) -> list[Verdict]:
        self.events.append(event)
        self._recorder.append_event(event)
        verdicts = self._engine.evaluate(event)
        taken: list[Verdict] = []
        for verdict in verdicts:
            verdict, actions = self._responder.respond(verdict, self)
            self.verdicts.append(verdict)
            self._recorder.append_verdict(verdict)
            self._charge(verdict)
            for action_event in actions:
                self.events.append(action_event)
                self._recorder.append_event(action_event)
            taken.append(verdict)
        return taken

    def _charge(self, verdict: Verdict) -> None:
        """File a verdict under its call; a verdict on a call whose result was already
        returned (its background process misbehaved later) goes out with the next one."""
        call = self._calls.get(verdict.call_id or "")
        if call is not None:
            call.verdicts.append(verdict)
            if call.finished:
                self._undelivered.append(verdict)
            elif verdict.action in (Action.KILL, Action.TERMINATE, Action.QUARANTINE,
                                    Action.FREEZE, Action.DENY):
                call.stop_reason = call.stop_reason or f"{verdict.rule_id}: {verdict.message}"
        else:
            self._undelivered.append(verdict)

    def _finish(self, call: _Call, late: list[Verdict]) -> list[Verdict]:
        """Mark the call answered; return every verdict its result must carry."""
        with self._lock:
            call.finished = True
            late = [*late, *self._undelivered]
            self._undelivered = []
        return [*late, *call.verdicts]

    def _lifecycle(self, state: str, call: _Call | None = None, **fields: Any) -> None:
        self.ingest(self.event(EventKind.LIFECYCLE, call=call, **{"life.state": state}, **fields))

    def _flush_audit(self, *, checkpoint: bool = False) -> None:
        flush = getattr(self._recorder, "flush", None)
        if flush is not None:
            flush(checkpoint=checkpoint)

    def _fail_closed(self, reason: str) -> None:
        """Stop the agent: kill everything and refuse further calls."""
        self._ended = self._ended or f"session stopped: {reason}"
        if self.sandbox is not None:
            with contextlib.suppress(Exception):
                self.sandbox.kill()

    # -- attribution ------------------------------------------------------------------

    def call_for_cgroup(self, cgroup_path: str) -> _Call | None:
        """The call a process belongs to, from its (v2) cgroup path."""
        name = cgroup_path.rstrip("/").rsplit("/", 1)[-1]
        return self._calls_by_cgroup.get(name)

    def owns_cgroup(self, cgroup_path: str) -> bool:
        return f"/{self.session_id}/" in cgroup_path or cgroup_path.endswith(f"/{self.session_id}")

    @property
    def calls(self) -> Mapping[str, _Call]:
        return self._calls

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
        self._check_usable()
        with self._lock:
            if step is None:
                step = self._step_counter
            self._step_counter = max(self._step_counter, step + 1)
            call_id = call_id or f"c{step}"
            if call_id in self._calls:
                raise ValueError(f"call_id {call_id!r} was already used in this session")
            command = cmd if isinstance(cmd, str) else shlex.join(cmd)
            call = _Call(call_id, step, command)
            self._calls[call_id] = call
            late = self._undelivered
            self._undelivered = []
        argv = self._argv(cmd)
        limit = min(timeout or self.policy.sandbox.limits.exec_timeout,
                    self.policy.sandbox.limits.exec_timeout)
        self._lifecycle("call_start", call, **{"cmd.raw": command})
        pre = self.ingest(self.event(EventKind.COMMAND, call=call, **self._analyse(command)))
        refused = [v for v in pre if v.action in (Action.DENY, Action.TERMINATE,
                                                  Action.QUARANTINE, Action.KILL,
                                                  Action.FREEZE)]
        if refused or self._ended:
            return self._denied(call, refused, late)

        env_full = {**_DEFAULT_ENV, **self.policy.sandbox.env, **(env or {})}
        data = stdin.encode() if isinstance(stdin, str) else stdin
        oom_before = self.sandbox.cgroup.oom_kills() if self.sandbox and self.sandbox.cgroup else 0
        assert self.sandbox is not None
        try:
            raw = self.sandbox.run(
                argv,
                env=env_full,
                cwd=cwd or WORKSPACE,
                stdin=data,
                timeout=max(0.001, min(limit, self._deadline - time.monotonic())),
                on_started=lambda handle: self._started(call, handle),
                should_stop=lambda: call.stop_reason or self._ended,
            )
        except SessionBroken as exc:
            if self._ended and self.sandbox.broken_reason in ("killed", "supervisor gone"):
                # the policy ended the episode while this call ran (terminate, quarantine):
                # that is an outcome for the agent, not an error for the caller
                return self._denied(call, [v for v in call.verdicts
                                           if v.action is not Action.NONE], late)
            self._fail_closed(str(exc))
            raise
        oom = bool(self.sandbox.cgroup and self.sandbox.cgroup.oom_kills() > oom_before)
        result = self._result(call, raw, oom, late)
        self._lifecycle("call_end", call, **{"proc.exit_code": result.exit_code,
                                             "outcome": result.outcome.value})
        return result

    def _argv(self, cmd: str | Sequence[str]) -> list[str]:
        if isinstance(cmd, str):
            return [_shell(self.policy.sandbox.rootfs), "-c", cmd]
        if not cmd:
            raise ValueError("empty command")
        return list(cmd)

    def _analyse(self, command: str) -> dict[str, Any]:
        """Static analysis of a command before it runs (the command sensor): what it
        would run once quoting, variables, eval and encoded payloads are resolved."""
        try:
            return analyze_command(command)
        except Exception as exc:  # analyze_command promises not to raise: a bug
            self._fail_closed(f"command analysis failed: {exc!r}")
            raise InternalError(f"command analysis failed on {command!r}") from exc

    def _started(self, call: _Call, handle: CallHandle) -> None:
        """The call's process exists, sits in its cgroup and waits for our go."""
        call.cgroup = handle.cgroup
        call.host_pid = handle.host_pid
        with self._lock:
            self._calls_by_cgroup[handle.cgroup.name] = call
        # Nothing the agent asked for runs before it is durably recorded. The group
        # commit started when the records were queued, so this wait overlaps the fork.
        try:
            self._flush_audit()
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
        call = self._calls.get(call_id)
        if call is None or call.cgroup is None or self.sandbox is None or not self.sandbox.cgroup:
            return False
        self.sandbox.cgroup.kill_call(call.cgroup)
        return True

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
                self.host.unregister(self)
            with contextlib.suppress(BastionError):
                self._lifecycle("closing")
                self._flush_audit(checkpoint=True)  # the episode ends on a checkpoint
        finally:
            self._closed = True
            self._cleanup_resources()

    def _cleanup_resources(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
        if self._network is not None:
            self._network.close()
        if self._owns_responder:
            self._responder.close()
        if self._owns_recorder:
            release_trail(self._recorder)  # type: ignore[arg-type]
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)  # a configured workspace is kept

    # -- files (through the choke point) ----------------------------------------------

    def write_file(self, path: str, content: str | bytes, *, step: int | None = None,
                   call_id: str | None = None) -> ExecResult:
        """A file-write tool call: runs `cat > path` in the sandbox so it is observed,
        attributed and checked like any other call."""
        # the path is part of the command text so command analysis sees the target
        return self.exec(f"cat > {shlex.quote(path)}", stdin=content, step=step,
                         call_id=call_id)

    def read_file(self, path: str, *, step: int | None = None,
                  call_id: str | None = None) -> ExecResult:
        return self.exec(["cat", "--", path], step=step, call_id=call_id)
