"""TRL (huggingface/trl) adapter: ``environment_factory``, ``env_mask``, stop callback.

``GRPOTrainer(environment_factory=...)`` builds one environment per rollout, calls
``reset(**example) -> str | None`` (the string is appended to the prompt), exposes the
environment's public methods as tools (their type hints and ``Args:`` docstrings become
the schema), and, when ``get_reward()`` exists, uses it as an extra reward source.
``BastionTRLEnvironment`` is such a class: tools ``shell``, ``read_file`` and
``write_file`` run in the rollout's bastion session; ``get_reward`` is the task reward
plus containment penalties (it also closes the session). TRL does not end the tool loop on an exception, so once
bastion ends the episode every further tool call answers "the episode is over".

Loss exclusion needs ``rollout_func`` (experimental), whose ``env_mask`` (0 = no
loss) TRL treats as the tool mask: ``env_mask(completion_ids, environments)`` builds
it from the trajectories' flags. ``BastionStopCallback`` is a ``TrainerCallback``
(duck-typed) that feeds finished episodes to a ``RunMonitor`` and sets
``control.should_training_stop`` when the circuit breaker trips.

Interfaces read from trl 1.16.0 (trl/trainer/grpo_trainer.py: ``EnvironmentFactory``,
``RolloutFunc``, ``env_mask`` handling, tool discovery via ``inspect.getmembers``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from ..env import BastionEnv
from ..records import EpisodeRecord
from ..safety import RunMonitor
from ._infra import infra_failed_before_start, infra_step, start_episode

__all__ = ["BastionRunGuard", "BastionStopCallback", "BastionTRLEnvironment", "env_mask"]


class BastionRunGuard:
    """Shared by a run's environments and its callback: the current training step and
    the run monitor that finished episodes are reported to."""

    def __init__(self, monitor: RunMonitor) -> None:
        self.monitor = monitor
        self.training_step = 0
        self._lock = threading.Lock()

    def report(self, record: EpisodeRecord) -> None:
        with self._lock:
            step = self.training_step
        self.monitor.record(record, training_step=step)


class BastionTRLEnvironment:
    """One rollout's environment. Construct through a factory, e.g.
    ``environment_factory=lambda: BastionTRLEnvironment(policy=p, state_dir=d)``."""

    def __init__(self, guard: BastionRunGuard | None = None, **env_kwargs: Any) -> None:
        self._env = BastionEnv(**env_kwargs)
        self._guard = guard
        self._over = True
        self._reported = False
        self._serial = 0

    def reset(self, **kwargs: Any) -> str | None:
        self._serial += 1
        episode_id = kwargs.get("episode_id") or f"trl-{os.getpid()}-{id(self):x}-{self._serial}"
        prompt, _ = start_episode(self._env, {"episode_id": str(episode_id)})
        self._over = False
        self._reported = False
        return prompt

    def _act(self, action: str) -> str:
        if self._over:
            return "the episode is over: bastion ended it"
        obs, _, terminated, truncated, _ = (
            infra_step(self._env) if infra_failed_before_start(self._env)
            else self._env.step(action))
        self._over = terminated or truncated
        return obs

    def shell(self, command: str) -> str:
        """Run a shell command in the task's workspace.

        Args:
            command: The shell command line to run.
        """
        return self._act(command)

    def read_file(self, path: str) -> str:
        """Read a file from the task's workspace.

        Args:
            path: Path of the file, relative to the workspace.
        """
        return self._act(json.dumps({"tool": "read_file", "path": path}))

    def write_file(self, path: str, content: str) -> str:
        """Write a file in the task's workspace.

        Args:
            path: Path of the file, relative to the workspace.
            content: The complete new content of the file.
        """
        return self._act(json.dumps({"tool": "write_file", "path": path, "content": content}))

    def get_reward(self) -> float:
        """Task reward plus containment penalties; grades the episode if the model
        stopped calling tools before submitting."""
        if not self._over and self._env.record is not None:
            self._act(json.dumps({"tool": "submit"}))
        record = self._env.record
        if record is None:
            return 0.0
        if self._guard is not None and not self._reported:
            self._guard.report(record)
            self._reported = True
        self._env.close()  # the episode is scored: free its sandbox now
        return record.total_reward

    @property
    def record(self) -> EpisodeRecord | None:
        return self._env.record

    def _close(self) -> None:
        """Private on purpose: TRL exposes every public method to the model as a tool."""
        self._env.close()


def env_mask(completion_ids: Sequence[Sequence[int]],
             environments: Sequence[BastionTRLEnvironment],
             base: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
    """Token-level ``env_mask`` for a ``rollout_func``: all zeros for trajectories
    flagged ``mask``/``drop`` or left out by ``rl.exclude`` (e.g. infra-failed), else
    ``base`` (or all ones)."""
    masks: list[list[int]] = []
    for i, (ids, env) in enumerate(zip(completion_ids, environments, strict=True)):
        flag = env.record.flag if env.record is not None else "keep"
        if flag in ("mask", "drop") or (env.record is not None and env.record.excluded):
            masks.append([0] * len(ids))
        else:
            masks.append(list(base[i]) if base is not None else [1] * len(ids))
    return masks


class BastionStopCallback:
    """A ``transformers.TrainerCallback`` (duck-typed: the callback handler calls these
    methods by event name) that stops training when the circuit breaker trips."""

    def __init__(self, guard: BastionRunGuard) -> None:
        self.guard = guard
        self.stopped_because: str | None = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.guard.training_step = int(state.global_step)
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.guard.monitor.end_training_step(self.guard.training_step)
        if self.guard.monitor.paused:
            self.stopped_because = self.guard.monitor.paused
            control.should_training_stop = True
        return control

    def __getattr__(self, name: str) -> Any:
        # every other TrainerCallback event is a no-op that returns control
        if name.startswith("on_"):
            return lambda args, state, control, **kwargs: control
        raise AttributeError(name)
