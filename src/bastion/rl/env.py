"""``BastionEnv``: one bastion session per episode, behind the Gymnasium API.

Actions are tool calls as text (a shell command, or a JSON file read/write/submit,
see ``actions``); observations are their results as text. Each ``step`` runs exactly
one tool call through ``Session.exec`` and returns, in ``info["bastion"]``, the
verdicts that arrived with it, the actions bastion took, and the attribution (run,
episode, step, call id). Reward = task reward (from the pluggable task's grader) +
penalties from the policy's ``rl.penalty``; a verdict of a severity listed in
``rl.terminate_on`` ends the episode; ``flag`` tells the trainer what
``rl.on_violation`` wants done with the trajectory.

The same object is a GEM-style environment (the interface ROLL uses): GEM's
``reset(seed) -> (obs, info)`` and ``step(action) -> (obs, reward, terminated,
truncated, info)`` with text observations are exactly Gymnasium's signatures.

Infos contain only deterministic data (no clocks, no random ids), so that the same
seed and actions give the same transitions, as Gymnasium's checker requires.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium
from gymnasium import spaces

from ..contracts import Evaluator, EventRecorder, ResponsePlanner
from ..errors import SessionBroken
from ..events import Action, Verdict
from ..policy import Policy
from ..results import ExecResult
from ..sandbox.steps import Blocking, Steps, drive
from ..session import Session
from .actions import ToolCall, parse_action
from .records import EpisodeRecord, StepRecord
from .shaping import CONTAINING_ACTIONS, excluded, judge, trajectory_flag, verdict_info
from .tasks import FixBugTask, StepContext, Task

__all__ = ["SETUP_STEP", "TEXT_CHARSET", "BastionEnv", "SessionFactory"]

# Observations and actions are printable ASCII plus newline and tab; anything else in
# command output is escaped (\xNN / \uNNNN) rather than dropped.
TEXT_CHARSET = frozenset(string.printable) - {"\x0b", "\x0c"}

# episode_id -> a new open session; a factory that takes a ``prepare`` keyword gets the
# task's prepare step to pass on to Session (see Task)
SessionFactory = Callable[..., Session]
SETUP_STEP = -1  # the step verdicts raised while reset() built the episode are charged to


class BastionEnv(gymnasium.Env[str, str]):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}

    def __init__(
        self,
        policy: Policy | str | os.PathLike[str] | None = None,
        *,
        task: Task | None = None,
        run_id: str = "run",
        name: str = "env",
        max_steps: int = 16,
        state_dir: str | os.PathLike[str] | None = None,
        session_factory: SessionFactory | None = None,
        engine_factory: Callable[[Policy], Evaluator] | None = None,
        responder_factory: Callable[[Policy], ResponsePlanner] | None = None,
        recorder: EventRecorder | None = None,
        exec_timeout: float = 60.0,
        max_obs_chars: int = 8192,
        max_action_chars: int = 4096,
        render_mode: str | None = None,
    ) -> None:
        if policy is None:
            policy = Policy.default()
        elif not isinstance(policy, Policy):
            policy = Policy.load(policy)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.policy = policy
        self._base_policy = policy  # reset(options={"policy": ...}) overrides per episode
        self._image: str | None = None  # reset(options={"image": ...}): the episode's image
        self.task: Task = task or FixBugTask()
        self.run_id = run_id
        self.name = name
        self.max_steps = max_steps
        self.state_dir = state_dir
        self.exec_timeout = exec_timeout
        self.render_mode = render_mode
        self._session_factory = session_factory
        self._engine_factory = engine_factory
        self._responder_factory = responder_factory
        self._recorder = recorder
        self.observation_space = spaces.Text(max_obs_chars, min_length=0, charset=TEXT_CHARSET)
        self.action_space = spaces.Text(max_action_chars, min_length=1, charset=TEXT_CHARSET)
        self.session: Session | None = None
        self.record: EpisodeRecord | None = None
        self._step = 0
        self._done = True
        self._reported: set[str] = set()
        self._carried: list[Verdict] = []  # setup verdicts, paid with the first step
        self._transcript: list[str] = []
        self._async: Any = None  # the AsyncSession over ``session`` (astep)

    # -- lifecycle --------------------------------------------------------------------

    def _new_session(self, episode_id: str) -> Session:
        kwargs: dict[str, Any] = {}
        prepare = getattr(self.task, "prepare", None)
        if prepare is not None:
            # the task's files go in before the sandbox (and its masks) exist
            kwargs["prepare"] = prepare
        if self._session_factory is not None:
            factory = self._session_factory
            if prepare is not None and "prepare" in inspect.signature(factory).parameters:
                return factory(episode_id, prepare=prepare)  # type: ignore[call-arg]
            return factory(episode_id)
        if self._engine_factory is not None:
            kwargs["engine"] = self._engine_factory(self.policy)
        if self._responder_factory is not None:
            kwargs["responder"] = self._responder_factory(self.policy)
        if self._recorder is not None:
            kwargs["recorder"] = self._recorder
        if self._image is not None:
            kwargs["image"] = self._image
        return Session(self.policy, run_id=self.run_id, episode_id=episode_id,
                       state_dir=self.state_dir, **kwargs)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start a new episode in a fresh session. ``options["episode_id"]`` names
        it; otherwise the name derives from the seed (so a seeded reset is
        reproducible) or is random."""
        super().reset(seed=seed)
        self._close_session()
        options = options or {}
        # per-episode task image and policy (SWE-style tasks ship one image per task)
        chosen = options.get("policy")
        if chosen is None:
            self.policy = self._base_policy
        elif isinstance(chosen, Policy):
            self.policy = chosen
        else:
            self.policy = Policy.from_dict(chosen) if isinstance(chosen, dict) else Policy.load(chosen)
        image = options.get("image")
        self._image = str(image) if image is not None else None
        episode_id = options.get("episode_id")
        if not episode_id:
            episode_id = (f"{self.name}-s{seed}" if seed is not None
                          else f"{self.name}-{secrets.token_hex(4)}")
        self.session = self._new_session(str(episode_id))
        try:
            self.task.setup(self.session)
        except BaseException:
            self._close_session()
            raise
        self.record = EpisodeRecord(
            run_id=self.session.run_id, episode_id=self.session.episode_id,
            session_id=self.session.session_id, policy_hash=self.policy.hash,
            labels={str(k): str(v) for k, v in (options.get("labels") or {}).items()},
        )
        self._step = 0
        self._done = False
        self._reported = set()
        setup = self._setup_verdicts()
        prompt = self.task.prompt
        self._transcript = [f"[task] {prompt}"]
        info = {"bastion": {"attribution": self._attribution(None, None),
                            "policy_hash": self.policy.hash, **setup}}
        return self._text(prompt), info

    def _setup_verdicts(self) -> dict[str, Any]:
        """Verdicts raised while the episode was built (task setup, registration):
        they go on the record (charged to step ``SETUP_STEP``), change the trajectory
        flag, are reported in reset's info, and their penalty is paid with the first
        step's reward (Gymnasium's reset has none)."""
        assert self.session is not None and self.record is not None
        self._settle()
        verdicts = self._new_verdicts()
        judgement = judge(verdicts, self.policy.rl)
        infos = [_setup_info(v) for v in verdicts]
        record = self.record
        record.setup_verdicts = infos
        record.violations.extend(_setup_info(v) for v in judgement.violations)
        record.flag = trajectory_flag(record.violated, self.policy.rl)
        if judgement.penalty:
            record.penalty_by_step[SETUP_STEP] = judgement.penalty
        self._carried = verdicts
        return {"verdicts": infos, "penalty": judgement.penalty,
                "violations": len(judgement.violations), "flag": record.flag}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        turn = self._begin_step(action)
        if turn.runs:
            try:
                turn.result = drive(self._tool_steps(turn))
            except SessionBroken as exc:  # the sandbox is gone: the episode is over
                turn.broken = str(exc)
        return drive(self._finish_steps(turn))

    # -- asyncio (one trainer loop, many environments) ----------------------------------

    async def areset(self, *, seed: int | None = None,
                     options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """``reset`` off the event loop: closing the last episode's session and
        creating the next one (bubblewrap launch, task setup) run on bastion's small
        lifecycle thread pool (``bastion.aio``). Same observation and info."""
        from ..aio import _lifecycle_pool

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            _lifecycle_pool(), lambda: self.reset(seed=seed, options=options))

    async def astep(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """``step``, awaited: the same steps, the same info dict. The tool call runs
        as ``AsyncSession.exec`` (its I/O on the loop, no thread per call); waiting for
        the pipeline to settle, ending the session and grading (``task.reward``, which
        may run the grader in the sandbox) run on the lifecycle thread pool.

        Cancelling an ``astep`` kills the tool call (see ``AsyncSession``) and
        leaves the episode unusable: ``areset`` next."""
        from ..aio import AsyncSession, _lifecycle_pool, drive_async

        turn = self._begin_step(action)
        if turn.runs:
            assert self.session is not None
            if self._async is None or self._async.session is not self.session:
                self._async = AsyncSession.wrap(self.session)
            try:
                turn.result = await self._async._run(lambda: self._tool_steps(turn))
            except SessionBroken as exc:
                turn.broken = str(exc)
            except BaseException:
                self._done = True  # cancelled mid-step: the record misses this step
                raise
        try:
            return await drive_async(self._finish_steps(turn), _lifecycle_pool().submit)
        except BaseException:
            self._done = True
            raise

    async def aclose(self) -> None:
        """``close`` off the event loop."""
        from ..aio import _lifecycle_pool

        await asyncio.get_running_loop().run_in_executor(_lifecycle_pool(), self.close)

    # -- one step, as steps (sandbox/steps.py) for step and astep ------------------------

    def _begin_step(self, action: str) -> _Turn:
        if self._done or self.session is None or self.record is None:
            raise RuntimeError("the episode is over: call reset() first")
        return _Turn(self._step, f"c{self._step}", action, parse_action(action))

    def _tool_steps(self, turn: _Turn) -> Steps[ExecResult]:
        """The turn's tool call through the session's choke point (``run_tool_call``
        as steps)."""
        assert self.session is not None
        call, step, call_id = turn.call, turn.step, turn.call_id
        if call.tool == "read_file":
            return self.session._exec_steps(["cat", "--", call.path], step=step,
                                            call_id=call_id)
        if call.tool == "write_file":
            return self.session._write_steps(call.path, call.content, step=step,
                                             call_id=call_id)
        return self.session._exec_steps(call.command, step=step, call_id=call_id,
                                        timeout=self.exec_timeout)

    def _finish_steps(self, turn: _Turn
                      ) -> Steps[tuple[str, float, bool, bool, dict[str, Any]]]:
        """Judge the turn's verdicts, grade, record, and build the transition. What
        may block (settling the pipeline, ending the session, grading) is a
        ``Blocking`` step."""
        assert self.session is not None and self.record is not None
        session = self.session
        step, call_id, action, call = turn.step, turn.call_id, turn.action, turn.call
        result, broken = turn.result, turn.broken
        if call.malformed:
            observation = f"error: {call.malformed}"
        elif call.tool == "submit":
            observation = "submitted"
        elif result is not None:
            observation = _format_result(result)
        else:
            observation = f"the episode was ended: {broken}"

        if broken or session.ended:
            yield Blocking(session.settle)
        carried, self._carried = self._carried, []  # setup's, already on the record
        verdicts = carried + self._new_verdicts()
        judgement = judge(verdicts, self.policy.rl)
        if judgement.terminate and not session.ended:
            reason = f"rl.terminate_on: {judgement.reason}"
            yield Blocking(lambda: session.terminate(reason))
        ended = session.ended
        terminated = call.tool == "submit" or judgement.terminate or ended is not None
        truncated = not terminated and step + 1 >= self.max_steps
        context = StepContext(session, step, call, result, terminated or truncated)
        task_reward = yield Blocking(lambda: self.task.reward(context))
        # Grading runs in its own grader session (``grading``), whose verdicts are its
        # own; verdicts still being handled by a sensor thread must land in this last
        # step.
        if terminated or truncated:
            yield Blocking(session.settle)
        late = self._new_verdicts()
        if late:
            late_judgement = judge(late, self.policy.rl)
            verdicts += late
            judgement = judge(verdicts, self.policy.rl)
            if late_judgement.terminate and not session.ended:
                reason = f"rl.terminate_on: {late_judgement.reason}"
                yield Blocking(lambda: session.terminate(reason))
                terminated, truncated = True, False
        reward = float(task_reward + judgement.penalty)

        setup_ids = {v.id for v in carried}
        infos = [_setup_info(v) if v.id in setup_ids else verdict_info(v, step)
                 for v in verdicts]
        record = self.record
        for verdict, vinfo in zip(verdicts, infos, strict=True):
            if verdict.id in setup_ids:
                continue  # charged at reset
            charged = int(vinfo["charged_step"])  # type: ignore[call-overload]
            penalty = self.policy.rl.penalty.get(str(verdict.severity), 0.0)  # type: ignore[call-overload]
            record.penalty_by_step[charged] = record.penalty_by_step.get(charged, 0.0) + penalty
        record.violations.extend(verdict_info(v, step) for v in judgement.violations
                                 if v.id not in setup_ids)
        record.flag = trajectory_flag(record.violated, self.policy.rl)
        if terminated and record.terminated_by is None and call.tool != "submit":
            record.terminated_by = judgement.reason or _stopping(verdicts) or broken or ended
        record.truncated = truncated
        if session.infra_failure is not None and record.infra_reason is None:
            record.infra_reason = session.infra_failure  # not the agent's: no penalty
        record.excluded = excluded(record.flag, record.infra_failed, self.policy.rl)
        record.steps.append(StepRecord(
            step=step, call_id=call_id, action=action, tool=call.tool,
            outcome=result.outcome.value if result else None,
            exit_code=result.exit_code if result else None,
            task_reward=float(task_reward), penalty=judgement.penalty, reward=reward,
            verdicts=infos,
        ))
        self._transcript.append(f"[{step}] $ {call.describe()}\n{observation}")
        self._step += 1
        self._done = terminated or truncated

        info = {"bastion": {
            "attribution": self._attribution(step, call_id),
            "tool": call.tool,
            "outcome": result.outcome.value if result else None,
            "exit_code": result.exit_code if result else None,
            "verdicts": infos,
            "actions": [{"action": v.action.value, "rule_id": v.rule_id, "step": v.step,
                         "call_id": v.call_id, "contained": v.action in CONTAINING_ACTIONS}
                        for v in verdicts if v.action.value != "none"],
            "task_reward": float(task_reward),
            "penalty": judgement.penalty,
            "violations": len(judgement.violations),
            "terminated_by": record.terminated_by if terminated else None,
            "flag": record.flag,
            "episode_violations": len(record.violations),
            "infra_failed": record.infra_failed,
            "infra_reason": record.infra_reason,
            "exclude": record.excluded,
        }}
        graded = getattr(self.task, "grades", {}).get(session.episode_id) \
            if terminated or truncated else None
        if graded is not None:  # deterministic parts only (no clock, no session id)
            info["bastion"]["grade"] = {"passed": graded.passed, "reason": graded.reason,
                                        "grader_verdicts": len(graded.verdicts)}
        return self._text(observation), reward, terminated, truncated, info

    def _settle(self) -> None:
        """Wait until verdicts being handled right now are recorded (e.g. the one whose
        response killed the sandbox is in ``session.verdicts``)."""
        assert self.session is not None
        self.session.settle()

    def _collect_after_close(self) -> None:
        """Verdicts that arrived after the last step (a sensor that lagged behind): they
        cannot be paid as reward any more, but they go on the record, are charged to
        their step, and change the trajectory flag."""
        if self.session is None or self.record is None:
            return
        late = self._new_verdicts()
        if not late:
            return
        last = self.record.steps[-1].step if self.record.steps else 0
        for verdict in late:
            info = verdict_info(verdict, last)
            charged = int(info["charged_step"])  # type: ignore[call-overload]
            penalty = self.policy.rl.penalty.get(str(verdict.severity), 0.0)  # type: ignore[call-overload]
            self.record.penalty_by_step[charged] = \
                self.record.penalty_by_step.get(charged, 0.0) + penalty
            self.record.late_verdicts.append(info)
        self.record.violations.extend(verdict_info(v, last)
                                      for v in judge(late, self.policy.rl).violations)
        self.record.flag = trajectory_flag(self.record.violated, self.policy.rl)
        self.record.excluded = excluded(self.record.flag, self.record.infra_failed,
                                        self.policy.rl)

    def _new_verdicts(self) -> list[Verdict]:
        assert self.session is not None
        fresh = [v for v in list(self.session.verdicts) if v.id not in self._reported]
        self._reported.update(v.id for v in fresh)
        return fresh

    def _attribution(self, step: int | None, call_id: str | None) -> dict[str, Any]:
        assert self.session is not None
        return {"run_id": self.session.run_id, "episode_id": self.session.episode_id,
                "step": step, "call_id": call_id}

    def _text(self, text: str) -> str:
        limit = self.observation_space.max_length
        safe = _ascii(text)
        if len(safe) > limit:
            marker = "\n...[truncated]"
            safe = safe[: max(0, limit - len(marker))] + marker[: limit]
        return safe

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return "\n".join(self._transcript)
        return None

    def _close_session(self) -> None:
        if self.session is not None:
            session = self.session
            discard = getattr(self.task, "discard", None)
            if discard is not None:  # a grader session prepared for an ungraded episode
                discard(session.episode_id)
            try:
                session.close()
                self._collect_after_close()
            finally:
                self.session = None

    def close(self) -> None:
        """Close the episode's session (kills everything it started). Idempotent."""
        self._done = True
        self._close_session()
        super().close()


@dataclass
class _Turn:
    """One step in progress: the parsed action and what its tool call gave."""

    step: int
    call_id: str
    action: str
    call: ToolCall
    result: ExecResult | None = None
    broken: str | None = None  # why the session broke under the call, if it did

    @property
    def runs(self) -> bool:
        """Whether the action is a tool call run in the sandbox."""
        return not self.call.malformed and self.call.tool != "submit"


def _setup_info(verdict: Verdict) -> dict[str, object]:
    """A setup verdict is charged to ``SETUP_STEP`` whatever step its call had."""
    return {**verdict_info(verdict, SETUP_STEP), "charged_step": SETUP_STEP}


def _stopping(verdicts: list[Verdict]) -> str | None:
    """Name the verdict whose response ended the episode, if one did."""
    for v in verdicts:
        if v.action in (Action.TERMINATE, Action.QUARANTINE):
            return f"{v.rule_id} ({v.severity}) -> {v.action.value}"
    return None


def _format_result(result: ExecResult) -> str:
    parts = [result.stdout]
    if result.stderr:
        parts.append(result.stderr)
    tail = f"[exit {result.exit_code}]"
    if result.outcome.value not in ("ok", "exit_nonzero"):
        tail = f"[{result.outcome.value}: {result.reason or 'no reason given'}]"
    parts.append(tail)
    return "\n".join(p.rstrip("\n") for p in parts if p)


def _ascii(text: str) -> str:
    out = text.encode("ascii", "backslashreplace").decode("ascii")
    if all(c in TEXT_CHARSET for c in out):
        return out
    return "".join(c if c in TEXT_CHARSET else f"\\x{ord(c):02x}" for c in out)


