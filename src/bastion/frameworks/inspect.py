"""Inspect AI sandbox provider: ``sandbox="bastion"``.

Each sample runs in its own bastion Session (one episode of the eval's run), so an
Inspect eval gets bastion's containment, verdicts and audit trail with no glue code::

    pip install 'bastion[inspect]'
    Task(..., sandbox="bastion")                       # default policy
    Task(..., sandbox=("bastion", "policy.yaml"))      # or a bastion.yaml in the task dir

The package registers this module through Inspect's ``inspect_ai`` entry point.

What reaches the Inspect log: each new verdict is an ``InfoEvent`` (source
``bastion``) in the sample's transcript, next to the tool call that caused it, and
the sample's store holds ``bastion`` = ids, policy and every verdict so far, so a
scorer can read them (``bastion_verdicts()``). A command bastion denied, killed or
whose episode it ended comes back as a failed ``ExecResult`` whose stderr says why:
a contained violation is an observation for the agent, not a tool error.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import os
import posixpath
import tarfile
import threading
from pathlib import Path
from typing import Any, ClassVar, Literal, overload

import anyio
from inspect_ai.log import transcript
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Scorer, Target, accuracy, scorer
from inspect_ai.solver import TaskState
from inspect_ai.util import (
    ExecResult,
    OutputLimitExceededError,
    SandboxEnvironment,
    SandboxEnvironmentConfigType,
    SandboxEnvironmentLimits,
    SandboxUserUnsupportedError,
    sandboxenv,
    store,
)
from inspect_ai.util._sandbox._cli import SANDBOX_TOOLS_DIR
from inspect_ai.util._sandbox.environment import RootAccess, SandboxUnavailableError
from pydantic import BaseModel
from typing_extensions import override

from ..events import Verdict
from ..policy import Policy
from ..results import ExecResult as BastionResult
from ..results import Outcome
from ..session import Session
from . import calls

__all__ = [
    "STORE_KEY",
    "BastionSandboxConfig",
    "BastionSandboxEnvironment",
    "bastion_clean",
    "bastion_verdicts",
]

STORE_KEY = "bastion"
POLICY_FILES = ("bastion.yaml", "bastion.yml")


class BastionSandboxConfig(BaseModel, frozen=True, extra="forbid"):
    """``SandboxEnvironmentSpec("bastion", BastionSandboxConfig(...))``; a bare string
    config is the path of a policy file. Unknown keys are errors (a misspelt
    ``policy`` must not silently mean the default policy)."""

    policy: str | None = None  # a policy file; relative paths from the task directory
    image: str | None = None  # a task image (OCI layout, archive, ...) for every sample
    state_dir: str | None = None  # bastion's state directory (default: the host's)
    run_id: str | None = None  # default: "inspect-<eval id>"
    lab: bool = False  # attach sessions to bastion's simulated internet (tests, demos)
    # a host directory copied into each sample's workspace before its sandbox starts:
    # grader files under a protected path are then masked read-only like any other
    # (Inspect's Sample.files arrive after the sandbox, through write_file, where a
    # write to a protected path is, rightly, reward tampering)
    task_files: str | None = None


def bastion_verdicts() -> list[dict[str, Any]]:
    """The verdicts bastion reached in the current sample so far (for scorers)."""
    record = store().get(STORE_KEY) or {}
    return list(record.get("verdicts", []))


def _config(config: SandboxEnvironmentConfigType | None) -> BastionSandboxConfig:
    if config is None:
        for name in POLICY_FILES:  # Inspect runs a task from its own directory
            if Path(name).is_file():
                return BastionSandboxConfig(policy=str(Path(name).resolve()))
        return BastionSandboxConfig()
    if isinstance(config, str):
        return BastionSandboxConfig(policy=config)
    if isinstance(config, BastionSandboxConfig):
        return config
    raise ValueError(f"sandbox 'bastion' takes a policy file path or a BastionSandboxConfig, "
                     f"not {type(config).__name__}")


def _ids(task_name: str) -> tuple[str, str]:
    """(run_id, episode_id) from the active sample: one run per eval, one episode per
    sample and epoch."""
    from inspect_ai.log._samples import sample_active

    active = sample_active()
    if active is None:
        return "", ""
    run = f"inspect-{active.eval_id}" if getattr(active, "eval_id", None) else ""
    sample_id = active.sample.id if active.sample.id is not None else active.id
    return run, f"{task_name}/{sample_id}/e{active.epoch}"


@sandboxenv(name="bastion")
class BastionSandboxEnvironment(SandboxEnvironment):
    """One bastion Session behind Inspect's sandbox interface."""

    # sessions still open, by task name: task_cleanup closes what a crash left
    _open: ClassVar[dict[str, set[BastionSandboxEnvironment]]] = {}
    _open_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, session: Session, task_name: str = "") -> None:
        super().__init__()
        self.session = session
        self.task_name = task_name
        # bastion runs every call as the session's one unprivileged user: tell Inspect
        # so, instead of letting it probe with user="root" at sample init
        self._root_access = RootAccess(
            "unusable", "bastion runs every call as the session's unprivileged agent user")
        self._identity: tuple[str, str] | None = None  # (uid, name) inside the sandbox
        self._reported = 0  # how many of session.verdicts are already in the log
        self._scanned = 0  # how many of session.events were looked at for actions
        self._actions: list[dict[str, Any]] = []

    # -- configuration ----------------------------------------------------------------

    @override
    @classmethod
    def config_files(cls) -> list[str]:
        return list(POLICY_FILES)

    @override
    @classmethod
    def config_deserialize(cls, config: dict[str, Any]) -> BaseModel:
        return BastionSandboxConfig(**config)

    @override
    @classmethod
    def default_concurrency(cls) -> int | None:
        # a session costs ~7 MiB and a few hundred ms to create; calls are cheap
        return 4 * (os.cpu_count() or 1)

    # -- lifecycle --------------------------------------------------------------------

    @override
    @classmethod
    async def sample_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                          metadata: dict[str, str]) -> dict[str, SandboxEnvironment]:
        cfg = _config(config)
        run_id, episode_id = _ids(task_name)

        def open_session() -> Session:
            policy = Policy.load(cfg.policy) if cfg.policy else Policy.default()
            prepare = (functools.partial(calls.stage_task_files, Path(cfg.task_files), policy)
                       if cfg.task_files else None)
            return Session(policy, run_id=cfg.run_id or run_id, episode_id=episode_id,
                           state_dir=cfg.state_dir, image=cfg.image, lab=cfg.lab,
                           prepare=prepare)

        session = await anyio.to_thread.run_sync(open_session)
        env = cls(session, task_name)
        with cls._open_lock:
            cls._open.setdefault(task_name, set()).add(env)
        env._report()
        return {"default": env}

    @override
    @classmethod
    async def sample_cleanup(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                             environments: dict[str, SandboxEnvironment],
                             interrupted: bool) -> None:
        for environment in environments.values():
            env = environment.as_type(BastionSandboxEnvironment)
            await env.aclose()

    async def aclose(self) -> None:
        """Close the session (idempotent); verdicts reached at the end are logged."""
        await anyio.to_thread.run_sync(self.session.close)
        self._report()
        with self._open_lock:
            self._open.get(self.task_name, set()).discard(self)

    @override
    @classmethod
    async def task_cleanup(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                           cleanup: bool) -> None:
        with cls._open_lock:
            left = list(cls._open.pop(task_name, set()))
        if cleanup:
            for env in left:
                await anyio.to_thread.run_sync(env.session.close)

    @override
    @classmethod
    async def cli_cleanup(cls, id: str | None) -> None:
        """``inspect sandbox cleanup bastion [ID]``: kill and remove sessions whose
        bastion process is gone, as ``bastion cleanup`` does. ``ID`` is a state
        directory (all of its dead sessions) or one session id in the default one;
        live sessions are never touched."""

        def clean() -> int:
            from ..gateway.plumbing import cleanup_stale
            from ..host import Host
            from ..sandbox.cleanup import find_leftovers, remove_leftovers

            state_dir = id if id and os.path.isdir(id) else None
            host = Host.for_state_dir(state_dir)
            leftovers = find_leftovers(host.state, host.cgroups)
            if id and state_dir is None:
                leftovers = [item for item in leftovers if item.session_id == id]
            remove_leftovers(host.state, host.cgroups, leftovers)
            cleanup_stale()  # dead gateway slots, as `bastion cleanup` clears them
            return len(leftovers)

        await anyio.to_thread.run_sync(clean)

    # -- calls ------------------------------------------------------------------------

    @override
    async def exec(self, cmd: list[str], input: str | bytes | None = None,
                   cwd: str | None = None, env: dict[str, str] | None = None,
                   user: str | None = None, timeout: int | None = None,
                   timeout_retry: bool = True, concurrency: bool = True) -> ExecResult[str]:
        if user is not None:
            await self._check_user(user)

        def run() -> BastionResult:
            for path, digest in _harness_executables(list(cmd), input):
                self.session.trust_executable(path, digest)
            return calls.run(self.session, list(cmd), stdin=input, cwd=cwd, env=env,
                             timeout=timeout)

        result = await self._call(run)
        if result.outcome is Outcome.TIMEOUT:
            raise TimeoutError(f"command timed out after {timeout}s: {cmd!r}")
        return _inspect_result(result)

    @override
    async def write_file(self, file: str, contents: str | bytes) -> None:
        await self._call(lambda: calls.write_file(self.session, file, contents))

    @overload
    async def read_file(self, file: str, text: Literal[True] = True) -> str: ...

    @overload
    async def read_file(self, file: str, text: Literal[False]) -> bytes: ...

    @override
    async def read_file(self, file: str, text: bool = True) -> str | bytes:
        limit = SandboxEnvironmentLimits.MAX_READ_FILE_SIZE
        try:
            data = await self._call(lambda: calls.read_file(self.session, file, limit=limit))
        except OverflowError:
            raise OutputLimitExceededError(
                limit_str=SandboxEnvironmentLimits.MAX_READ_FILE_SIZE_STR,
                truncated_output=None) from None
        return data.decode("utf-8") if text else data  # newlines kept as they are

    @override
    def default_polling_interval(self) -> float:
        return 0.2

    def verdicts(self) -> list[Verdict]:
        """Every verdict of this sample's session, late ones included."""
        return list(self.session.verdicts)

    # -- internals --------------------------------------------------------------------

    async def _call(self, fn: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(fn)
        except calls.SessionGone as exc:
            raise SandboxUnavailableError(f"bastion session unavailable: {exc}") from exc
        finally:
            self._report()

    async def _check_user(self, user: str) -> None:
        if self._identity is None:
            probe = await self._call(lambda: calls.run(self.session, ["sh", "-c", "id -u; id -un"]))
            uid, _, name = probe.stdout.strip().partition("\n")
            self._identity = (uid.strip(), name.strip())
        if user not in self._identity:
            raise SandboxUserUnsupportedError(
                f"bastion runs every call as the session's agent user "
                f"{self._identity[1]!r} (uid {self._identity[0]}); it cannot run as {user!r}")

    def _report(self) -> None:
        """Put new verdicts in the sample's transcript and the whole picture in its
        store. Called on Inspect's event loop thread, after each call."""
        s = self.session
        new = s.verdicts[self._reported:]
        self._reported += len(new)
        events = s.events[self._scanned:]
        self._scanned += len(events)
        acted = calls.action_records(events)
        self._actions.extend(acted)
        if new or acted:
            transcript().info({"bastion": "verdicts", "session_id": s.session_id,
                               "verdicts": [v.to_dict() for v in new],
                               "actions": acted}, source="bastion")
        contained = calls.containment(s)
        store().set(STORE_KEY, {
            "run_id": s.run_id,
            "episode_id": s.episode_id,
            "session_id": s.session_id,
            "policy": s.policy.name,
            "policy_hash": s.policy.hash,
            "verdicts": [v.to_dict() for v in s.verdicts[:self._reported]],
            "actions": list(self._actions),
            "ended": s.ended,
            "contained": contained is not None,
        })


def _harness_executables(cmd: list[str], data: str | bytes | None) -> list[tuple[str, str]]:
    """The executables of Inspect's own sandbox tools, when this exec is Inspect
    unpacking them: the archive arrives on stdin (from Inspect, on the host) for ``tar``
    run in its tools directory (``SANDBOX_TOOLS_DIR``, named in the command as the
    directory or as its parent and leaf). Each is trusted at its path with the digest
    of these bytes (``Session.trust_executable``): a changed byte, or the same name
    anywhere else, is not the harness's program."""
    if not isinstance(data, bytes):
        return []
    if data[:2] != b"\x1f\x8b" and data[257:262] != b"ustar":  # neither gzip nor tar
        return []
    parent, leaf = posixpath.split(SANDBOX_TOOLS_DIR)
    if SANDBOX_TOOLS_DIR not in cmd and not any(
            a == parent and b == leaf for a, b in itertools.pairwise(cmd)):
        return []
    return list(_archive_programs(hashlib.sha256(data).hexdigest(), data))


_programs_cache: dict[str, tuple[tuple[str, str], ...]] = {}  # archive sha256 -> programs


def _archive_programs(key: str, data: bytes) -> tuple[tuple[str, str], ...]:
    """The programs of one tools archive, read once per process (every sample's
    sandbox gets the same archive; unpacking it costs a few hundred ms)."""
    hit = _programs_cache.get(key)
    if hit is None:
        if len(_programs_cache) >= 8:  # one or two archives in practice (arch, gzip or not)
            _programs_cache.clear()
        hit = _programs_cache[key] = tuple(_read_programs(data))
    return hit


def _read_programs(data: bytes) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                name = posixpath.normpath(member.name)
                if (not member.isfile() or not member.mode & 0o111 or name.startswith(("/", ".."))
                        or name.endswith(".so") or ".so." in name):
                    continue  # only programs a process can exec (libraries are mapped)
                f = archive.extractfile(member)
                if f is not None:
                    found.append((f"{SANDBOX_TOOLS_DIR}/{name}",
                                  hashlib.sha256(f.read()).hexdigest()))
    except (tarfile.TarError, OSError, EOFError):
        return []  # not an archive after all: nothing is trusted
    return found


def _inspect_result(result: BastionResult) -> ExecResult[str]:
    stderr = result.stderr
    if result.outcome is Outcome.KILLED and result.reason and result.reason not in stderr:
        stderr = f"{stderr}bastion killed this command: {result.reason}\n"
    return ExecResult(success=result.exit_code == 0, returncode=result.exit_code,
                      stdout=result.stdout, stderr=stderr)


@scorer(metrics=[accuracy()])
def bastion_clean() -> Scorer:
    """CORRECT when bastion reached no verdict in the sample, INCORRECT otherwise; the
    verdicts are in the score's metadata. Pair it with the task's own scorer to keep
    trajectories that scored by breaking the rules out of a training set."""

    async def score(state: TaskState, target: Target) -> Score:
        found = bastion_verdicts()
        record = store().get(STORE_KEY) or {}
        worst = ", ".join(sorted({f"{v['rule_id']} ({v['action']})" for v in found}))
        return Score(value=INCORRECT if found else CORRECT,
                     explanation=(f"bastion: {worst}" if found else "bastion: no verdicts"),
                     metadata={"bastion_verdicts": found,
                               "bastion_contained": bool(record.get("contained"))})

    return score
