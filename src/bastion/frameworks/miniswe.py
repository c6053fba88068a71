"""mini-swe-agent environment: every action the agent takes runs in a bastion Session.

In a mini-swe-agent config (``mini``, ``mini-extra swebench``, or your own script)::

    environment:
      environment_class: bastion.frameworks.miniswe.BastionEnvironment
      policy: bastion.yaml            # optional; the default policy otherwise

``execute(action)`` returns mini-swe-agent's ``{"output", "returncode",
"exception_info"}`` with the usual submission convention (first output line
``COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT`` with return code 0 ends the run). What bastion
adds to its own log, the trajectory file: each observation's ``extra.bastion`` (the
call's outcome, call id, step and verdicts), and ``info.bastion`` from ``serialize()``
(run, episode and session ids, policy hash, every verdict). A command bastion denied
or killed is an observation whose ``exception_info`` says why; when a verdict ends the
episode, the run ends with exit status ``BastionTerminated``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from pathlib import Path
from typing import Any, Self

from minisweagent.exceptions import InterruptAgentFlow, Submitted
from minisweagent.utils.serialize import recursive_merge
from pydantic import BaseModel

from ..policy import Policy
from ..results import ExecResult, Outcome
from ..session import Session
from . import calls

__all__ = ["SUBMIT_MARKER", "BastionEnvironment", "BastionEnvironmentConfig",
           "EpisodeTerminated"]

SUBMIT_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


class BastionEnvironmentConfig(BaseModel, extra="forbid"):
    """Unknown keys are errors: a misspelt ``policy`` must not mean the default one."""

    cwd: str = ""  # default: the task directory (/workspace, or the image's WORKDIR)
    env: dict[str, str] = {}
    forward_env: list[str] = []  # host variables passed in by name (mini's docker option)
    timeout: int = 30
    interpreter: list[str] = ["bash", "-c"]  # as mini's docker/swebench configs set it
    policy: str | None = None  # a bastion policy file; the default policy otherwise
    image: str | None = None  # a task image (OCI layout, archive, containers-storage:...)
    task_files: str | None = None  # a host directory copied in before the sandbox starts
    run_id: str = ""
    episode_id: str = ""
    state_dir: str | None = None
    lab: bool = False


class EpisodeTerminated(InterruptAgentFlow):
    """bastion ended the episode (a policy verdict): the agent's run is over."""


class BastionEnvironment:
    """mini-swe-agent's Environment protocol over one bastion Session (one episode).
    Pass ``session=`` to use a session you opened (a trainer's); otherwise one is
    opened from the config and closed by ``cleanup()``."""

    def __init__(self, *, config_class: type = BastionEnvironmentConfig,
                 session: Session | None = None, **kwargs: Any) -> None:
        self.config = config_class(**kwargs)
        self._owns = session is None
        if session is None:
            policy = Policy.load(self.config.policy) if self.config.policy else Policy.default()
            prepare = (functools.partial(calls.stage_task_files, Path(self.config.task_files),
                                         policy) if self.config.task_files else None)
            session = Session(policy, run_id=self.config.run_id,
                              episode_id=self.config.episode_id, state_dir=self.config.state_dir,
                              image=self.config.image, lab=self.config.lab, prepare=prepare)
        self.session = session

    def execute(self, action: dict, cwd: str = "", *, timeout: int | None = None
                ) -> dict[str, Any]:
        command = action.get("command", "")
        # the default interpreter is the session's own shell line, judged as typed
        cmd: str | list[str] = (command if self.config.interpreter == ["bash", "-c"]
                                else [*self.config.interpreter, command])
        env = {**{k: os.environ[k] for k in self.config.forward_env if k in os.environ},
               **self.config.env}
        try:
            result = calls.run(self.session, cmd, cwd=cwd or self.config.cwd or None,
                               env=env or None, timeout=timeout or self.config.timeout)
        except calls.SessionGone as exc:
            # bastion itself cannot go on (closed, broken): mini's own error path
            raise RuntimeError(f"bastion session unavailable: {exc}") from exc
        output = _observation(result)
        contained = calls.containment(self.session)
        if contained is not None:
            raise EpisodeTerminated(output_message(output), {
                "role": "exit",
                "content": f"bastion ended this episode: {contained.reason}",
                "extra": {"exit_status": "BastionTerminated", "submission": "",
                          "bastion": self._summary()},
            })
        self._check_finished(output)
        return output

    def _check_finished(self, output: dict[str, Any]) -> None:
        """mini-swe-agent's submission convention, as its local environment has it."""
        lines = output.get("output", "").lstrip().splitlines(keepends=True)
        if lines and lines[0].strip() == SUBMIT_MARKER and output["returncode"] == 0:
            submission = "".join(lines[1:])
            raise Submitted({"role": "exit", "content": submission,
                             "extra": {"exit_status": "Submitted", "submission": submission,
                                       "bastion": self._summary()}})

    def get_template_vars(self, **kwargs: Any) -> dict[str, Any]:
        return recursive_merge(
            self.config.model_dump(), platform.uname()._asdict(),
            {"cwd": self.config.cwd or calls.task_dir(self.session),
             "bastion_run_id": self.session.run_id,
             "bastion_episode_id": self.session.episode_id,
             "bastion_session_id": self.session.session_id},
            kwargs)

    def serialize(self) -> dict[str, Any]:
        return {"info": {
            "config": {
                "environment": self.config.model_dump(mode="json"),
                "environment_type": f"{type(self).__module__}.{type(self).__name__}",
            },
            "bastion": self._summary(),
        }}

    def _summary(self) -> dict[str, Any]:
        s = self.session
        return {"run_id": s.run_id, "episode_id": s.episode_id, "session_id": s.session_id,
                "policy": s.policy.name, "policy_hash": s.policy.hash, "ended": s.ended,
                "verdicts": [v.to_dict() for v in list(s.verdicts)],
                "actions": calls.action_records(list(s.events))}

    def cleanup(self) -> None:
        """Close the session this environment opened (idempotent)."""
        if self._owns:
            self.session.close()

    close = cleanup

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.cleanup()


def _observation(result: ExecResult) -> dict[str, Any]:
    """mini's output dict: stdout then stderr (bastion keeps the streams apart, so they
    are not interleaved as with ``2>&1``)."""
    out: dict[str, Any] = {
        "output": result.stdout + result.stderr,
        "returncode": result.exit_code,
        "exception_info": "",
        "extra": {"bastion": {"outcome": result.outcome.value, "call_id": result.call_id,
                              "step": result.step,
                              "verdicts": [v.to_dict() for v in result.verdicts]}},
    }
    if result.outcome is Outcome.TIMEOUT:
        out["returncode"] = -1  # as mini's local environment reports a timeout
        out["exception_info"] = (f"An error occurred while executing the command: "
                                 f"{result.reason}")
        out["extra"] |= {"exception_type": "TimeoutExpired", "exception": result.reason}
    elif result.outcome is Outcome.KILLED:
        out["exception_info"] = f"bastion killed this command: {result.reason}"
    elif result.outcome in (Outcome.DENIED, Outcome.TERMINATED):
        reason = result.reason or "session ended"
        # bastion's refusal already says so ("bastion denied this command (rule, ...)")
        out["exception_info"] = reason if reason.startswith("bastion") else f"bastion: {reason}"
    return out


def output_message(output: dict[str, Any]) -> dict[str, Any]:
    """The observation of the action that ended the episode, kept in the trajectory."""
    return {"role": "user",
            "content": f"<returncode>{output['returncode']}</returncode>\n"
                       f"<exception>{output['exception_info']}</exception>\n"
                       f"<output>\n{output['output']}</output>",
            "extra": {"raw_output": output["output"], "returncode": output["returncode"],
                      "exception_info": output["exception_info"], **output["extra"]}}
