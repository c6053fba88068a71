"""Grading outside the agent's reach.

A grader that runs inside the agent's own sandbox runs in a place the agent shaped:
its ``conftest.py`` forcing every test to pass, a ``pytest.py`` or ``unittest.py``
shadowing the runner, a ``sitecustomize.py`` or ``.pth`` in its user site, rc files
that change ``PATH``, and a background process still alive that rewrites a file (or
the grader's own output) while the grader runs. Each of those changes the reward
without solving the task.

So an episode is graded here, after it ends, in a fresh short-lived session:

1. the agent is stopped: every process of the episode's calls is killed (cgroup
   kill, waited for), so nothing of the agent's runs while it is graded;
2. the files under test are copied out of the agent's workspace from the host, by
   file descriptor without following links (an agent's symlink cannot make the host
   read something else), regular files only, within a size and count budget; what
   hooks the interpreter or the test runner rather than being code under test
   (dot paths, ``conftest.py``, runner configuration, ``sitecustomize``, ``.pth``,
   bytecode caches, modules named like the runner, and any file of the agent's in
   the directories of the pristine tests, where it would be collected with them and
   could patch the code under test) is never copied;
3. the task's pristine tests are written over them, owned by root and read-only;
4. the grader's command runs in a new session of the same sandbox policy with the
   agent's workspace, network and rw mounts taken away: bastion's own environment
   (the agent's ``PATH``, ``HOME`` and rc files do not exist there), and no process
   of the agent's alive in it.

The grader session can be started early (``PreparedGrader``, which ``FixBugTask``
does at the episode's first step): it is created in the background, with only the
pristine tests in its workspace, while the agent's calls run; at grading the agent's
files are written into it from the host (nothing of the grader session has run yet,
so its workspace holds nothing an agent made) and its command runs. Grading then adds
the copy and the grader's call to the episode's wall time, not a session's creation.

A session in a task image (``bastion.image``) is graded the same way over a copy of
its overlay's upper layer: the files the agent added or changed under the image's
workspace (``WORKDIR``, or the policy's ``workspace: /testbed``) are written, and the
ones it deleted removed, in a fresh view of the same image; the pristine tests go
over them.

The grader session is recorded in the run's trail under the episode's ids (its own
session id, policy named ``<name>/grader``), and judged by the same rules; its
verdicts never reach the agent's reward (``GradeResult.verdicts`` reports them),
and a grader session that a verdict ended passes nothing.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import os
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import BastionError, SessionBroken
from ..policy import Policy
from ..session import Session

__all__ = ["GradeResult", "Grader", "PreparedGrader", "grade", "grader_policy",
           "snapshot_workspace"]

# Names that hook the interpreter or the test runner: never the code under test.
_HOOK_NAMES = frozenset({
    "conftest.py", "sitecustomize.py", "usercustomize.py", "pytest.ini", "tox.ini",
    "setup.cfg", "pyproject.toml", "noxfile.py", "__pycache__",
    # modules that would be imported instead of the runner (or its dependencies)
    "pytest.py", "pytest", "_pytest", "_pytest.py", "py.py", "pluggy", "pluggy.py",
    "iniconfig", "iniconfig.py", "unittest", "unittest.py", "site.py",
})
_HOOK_SUFFIXES = (".pth", ".pyc", ".pyo")


@dataclass(frozen=True)
class Grader:
    """One task's grading run.

    ``tests``: the pristine test files (relative path -> content), written root-owned
    and read-only over whatever the agent left at those paths. ``command``: the argv
    run in the grader's workspace; it passes on exit status 0 (and, if
    ``pass_marker`` is set, that text in its stdout). ``graded``: globs (over paths
    relative to the workspace) of the agent's files that are copied in: the files
    under test."""

    tests: Mapping[str, str]
    command: tuple[str, ...]
    graded: tuple[str, ...] = ("*",)
    pass_marker: str | None = None
    timeout: float = 60.0
    max_bytes: int = 64 * 1024 * 1024
    max_files: int = 20_000


@dataclass(frozen=True)
class GradeResult:
    """What grading found. ``passed`` is the only thing a reward reads."""

    passed: bool
    reason: str
    seconds: float
    session_id: str | None = None
    copied: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # agent files left out, with why
    verdicts: tuple[dict[str, Any], ...] = field(default=())  # the grader session's own


class SnapshotTooLarge(BastionError):
    """The agent's files under test exceed the grader's budget."""


def grader_policy(policy: Policy, *, image: bool = False) -> Policy:
    """The agent's policy for the grader: the same sandbox (rootfs, image, limits,
    protected and hidden paths) and rules, but a fresh workspace of its own (in an
    image session, the workspace is a path of the image's fresh view: kept), no
    network, and the policy's extra mounts read-only (a rw cache is something the
    agent could have written)."""
    sandbox = policy.model.sandbox
    mounts = [m.model_copy(update={"mode": "ro"}) for m in sandbox.mounts]
    workspace = sandbox.workspace if image else None
    fresh = sandbox.model_copy(update={"workspace": workspace, "mounts": mounts})
    network = type(policy.model.network)()
    model = policy.model.model_copy(update={
        "name": f"{policy.model.name}/grader", "sandbox": fresh, "network": network})
    return Policy(model, source=f"{policy.source} (grader)")


def _hook(name: str) -> bool:
    """Whether a file or directory name hooks the interpreter or the test runner."""
    return name.startswith(".") or name in _HOOK_NAMES or name.endswith(_HOOK_SUFFIXES)


def _test_trees(grader: Grader) -> tuple[str, ...]:
    """The directories that hold the pristine tests (``tests/``): the grader's alone."""
    trees = {str(PurePosixPath(p).parent) for p in grader.tests}
    return tuple(sorted(f"{t}/" for t in trees if t not in ("", ".")))


def _open_beneath(root: Path, rel: str) -> int:
    """A directory fd for ``root/rel``, opening each component of ``rel`` without
    following links (an agent-made link in the path fails with ``OSError``)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECTORY
    fd = os.open(root, flags)
    try:
        for part in PurePosixPath(rel).parts:
            if part in ("/", "."):
                continue
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def snapshot_workspace(root: Path, grader: Grader, *, beneath: str = ""
                       ) -> tuple[dict[str, tuple[bytes, int]], list[str]]:
    """The agent's files under test in ``root/beneath``, read from the host without
    following links: ``({relative path: (content, mode)}, [skipped path: why])``.
    Raises ``SnapshotTooLarge`` past the budget."""
    files: dict[str, tuple[bytes, int]] = {}
    skipped: list[str] = []
    total = 0
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    tests = {str(PurePosixPath(p)) for p in grader.tests}
    test_trees = _test_trees(grader)

    def walk(dir_fd: int, prefix: str) -> None:
        nonlocal total
        for entry in sorted(os.scandir(dir_fd), key=lambda e: e.name):
            rel = f"{prefix}{entry.name}"
            if _hook(entry.name):
                skipped.append(f"{rel}: hooks the interpreter or the test runner")
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(entry.name, flags | os.O_DIRECTORY, dir_fd=dir_fd)
                except OSError as exc:
                    skipped.append(f"{rel}/: {exc.strerror}")
                    continue
                try:
                    walk(sub, rel + "/")
                finally:
                    os.close(sub)
                continue
            if rel in tests:
                continue  # the pristine copy goes there
            if any(rel.startswith(t) for t in test_trees):
                # a test module of the agent's beside the pristine ones would be
                # collected with them and could patch the code under test
                skipped.append(f"{rel}: inside the grader's test tree")
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped.append(f"{rel}: not a regular file")
                continue
            if not any(fnmatch.fnmatchcase(rel, g) for g in grader.graded):
                continue
            fd = os.open(entry.name, flags | os.O_NONBLOCK, dir_fd=dir_fd)
            try:
                fst = os.fstat(fd)
                if not stat.S_ISREG(fst.st_mode):  # swapped since scandir
                    skipped.append(f"{rel}: not a regular file")
                    continue
                total += fst.st_size
                if total > grader.max_bytes or len(files) >= grader.max_files:
                    raise SnapshotTooLarge(
                        f"the files under test exceed the grader's budget "
                        f"({grader.max_files} files, {grader.max_bytes} bytes)")
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                files[rel] = (b"".join(chunks), fst.st_mode & 0o755)
            finally:
                os.close(fd)

    top = _open_beneath(root, beneath)
    try:
        walk(top, "")
    finally:
        os.close(top)
    return files, skipped


def _writer(files: Mapping[str, tuple[bytes, int]], tests: Mapping[str, str]):  # type: ignore[no-untyped-def]
    """``prepare(workspace, uid)`` for the grader session: the agent's files owned by
    the grader's uid, the pristine tests (and their directories) owned by root."""

    def prepare(workspace: Path, uid: int) -> None:
        for rel, (data, mode) in files.items():
            target = workspace / rel
            for parent in reversed(target.relative_to(workspace).parents[:-1]):
                directory = workspace / parent
                if not directory.exists():
                    directory.mkdir(mode=0o755)
                    os.chown(directory, uid, uid)
            target.write_bytes(data)
            os.chmod(target, mode | 0o600)
            os.chown(target, uid, uid)
        for rel, content in tests.items():
            target = workspace / rel
            if ".." in PurePosixPath(rel).parts or PurePosixPath(rel).is_absolute():
                raise ValueError(f"grader test file {rel!r} escapes the workspace")
            target.parent.mkdir(parents=True, exist_ok=True)
            for parent in target.relative_to(workspace).parents[:-1]:
                os.chown(workspace / parent, 0, 0)  # the agent's code cannot add beside them
                os.chmod(workspace / parent, 0o755)
            target.write_text(content)
            os.chown(target, 0, 0)
            os.chmod(target, 0o644)

    return prepare


def _lay_files(root: Path, uid: int, files: Mapping[str, tuple[bytes, int]],
               deleted: list[str], tests: Mapping[str, str]) -> None:
    """Write the agent's files (owned by ``uid``) and the pristine tests (root's,
    read-only) under ``root``, a fresh grader workspace nothing has run in, without
    following links; remove ``deleted``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    for rel in deleted:
        target = root / rel
        if target.is_file() and not target.is_symlink():
            target.unlink()
    for rel, (data, mode) in files.items():
        target = root / rel
        for parent in reversed(PurePosixPath(rel).parents[:-1]):
            directory = root / parent
            if not directory.exists():
                directory.mkdir(mode=0o755)
                os.chown(directory, uid, uid)
        if target.is_symlink():
            target.unlink()
        fd = os.open(target, flags, mode | 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(target, mode | 0o600)
        os.chown(target, uid, uid)
    for rel, content in tests.items():
        if ".." in PurePosixPath(rel).parts or PurePosixPath(rel).is_absolute():
            raise ValueError(f"grader test file {rel!r} escapes the workspace")
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        fd = os.open(target, flags, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chown(target, 0, 0)
        os.chmod(target, 0o644)


def _image_changes(session: Session, grader: Grader
                   ) -> tuple[str, dict[str, tuple[bytes, int]], list[str], list[str]]:
    """An image session's changes under its workspace, from its overlay's upper layer:
    ``(workspace, files, deleted paths, skipped)``, paths relative to the workspace."""
    view = session.image_view
    assert view is not None
    workspace = view.cwd
    top = workspace.rstrip("/") + "/"
    files: dict[str, tuple[bytes, int]] = {}
    skipped: list[str] = []
    if os.path.lexists(view.overlay.upper / workspace.lstrip("/")):
        files, skipped = snapshot_workspace(view.overlay.upper, grader,
                                            beneath=workspace.lstrip("/"))
    skipped = [s for s in skipped if not s.endswith(": not a regular file")]  # whiteouts
    tests = {str(PurePosixPath(p)) for p in grader.tests}
    deleted = []
    for change in view.changes():
        if change.kind != "deleted" or not change.path.startswith(top):
            continue
        rel = change.path[len(top):]
        if rel in tests or any(_hook(part) for part in PurePosixPath(rel).parts) \
                or any(rel.startswith(t) for t in _test_trees(grader)):
            continue
        if any(fnmatch.fnmatchcase(rel, g) for g in grader.graded):
            deleted.append(rel)
    return workspace, files, deleted, skipped


def _write_into_image(grading: Session, workspace: str, files: Mapping[str, tuple[bytes, int]],
                      deleted: list[str], tests: Mapping[str, str]) -> None:
    """Lay the agent's changes and the pristine tests into the grader's fresh view of
    the image (from the host, before the grader's command runs: nothing of the
    grader session's has run in it yet)."""
    view = grading.image_view
    assert view is not None
    _lay_files(view.root / workspace.lstrip("/"), grading.host_uid, files, deleted, tests)


def stop_agent(session: Session, timeout: float = 30.0) -> None:
    """Kill every process the episode's calls left (background ones too) and wait
    until their cgroups are empty. Raises ``SessionBroken`` if one survives."""
    deadline = time.monotonic() + timeout
    while live := session.live_calls():
        if time.monotonic() > deadline:
            raise SessionBroken(f"agent processes survived the kill before grading: {live}")
        for call_id in live:
            session.kill_call(call_id)
        time.sleep(0.02)


_PREPARE_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_PREPARE_LOCK = threading.Lock()


def _prepare_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _PREPARE_POOL
    with _PREPARE_LOCK:
        if _PREPARE_POOL is None:
            _PREPARE_POOL = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="bastion-grader-prepare")
        return _PREPARE_POOL


def _grader_kwargs(session: Session, grader: Grader) -> dict[str, Any]:
    recorder = getattr(session, "_recorder", None)
    kwargs: dict[str, Any] = {"recorder": recorder} if recorder is not None else {}
    if session.image_view is not None:
        kwargs["image"] = session._image_ref
    return kwargs


class PreparedGrader:
    """A grader session created ahead of grading, in the background, while the
    episode's calls still run: the same session ``grade`` would create (the agent's
    policy as ``grader_policy``, the episode's run and episode ids, the run's trail),
    with only the pristine tests in its workspace. ``grade(..., prepared=p)`` uses it;
    ``close()`` discards an unused one (an episode that ended without grading)."""

    def __init__(self, session: Session, grader: Grader) -> None:
        self.episode_id = session.episode_id
        self._image = session.image_view is not None
        policy = grader_policy(session.policy, image=self._image)
        kwargs = _grader_kwargs(session, grader)
        if not self._image:
            kwargs["prepare"] = _writer({}, grader.tests)
        self._lock = threading.Lock()
        self._taken = False
        self._future = _prepare_pool().submit(
            lambda: Session(policy, run_id=session.run_id, episode_id=session.episode_id,
                            host=session.host, **kwargs))

    def ready(self) -> bool:
        return self._future.done()

    @property
    def session(self) -> Session | None:
        """The grader session once created (None before, or if creating it failed)."""
        if not self._future.done() or self._future.exception() is not None:
            return None
        return self._future.result()

    def take(self) -> Session:
        """The grader session (waiting for its creation); once only. Raises what the
        creation raised."""
        with self._lock:
            if self._taken:
                raise RuntimeError("a prepared grader session is used once")
            self._taken = True
        return self._future.result()

    def close(self) -> None:
        """Discard the session if it was not taken (closed once created)."""
        with self._lock:
            if self._taken:
                return
            self._taken = True

        def discard(future: concurrent.futures.Future[Session]) -> None:
            if future.exception() is None:
                future.result().close()

        self._future.add_done_callback(discard)


def grade(session: Session, grader: Grader, *, step: int | None = None,
          prepared: PreparedGrader | None = None) -> GradeResult:
    """Grade the episode of ``session`` in a fresh grader session (see the module
    docstring), ``prepared`` ahead if given. Never raises for what the agent did: a
    failure to grade is a ``GradeResult`` that did not pass, with the reason."""
    started = time.monotonic()

    def failed(reason: str, **kw: Any) -> GradeResult:
        return GradeResult(False, reason, time.monotonic() - started, **kw)

    try:
        stop_agent(session)
    except SessionBroken as exc:
        if prepared is not None:
            prepared.close()
        return failed(str(exc))
    image = session.image_view is not None
    deleted: list[str] = []
    workspace = ""
    try:
        if image:
            workspace, files, deleted, skipped = _image_changes(session, grader)
        else:
            files, skipped = snapshot_workspace(session.workspace, grader)
    except (SnapshotTooLarge, OSError) as exc:
        if prepared is not None:
            prepared.close()
        return failed(f"the workspace could not be copied for grading: {exc}")
    kwargs = _grader_kwargs(session, grader)
    if not image:
        kwargs["prepare"] = _writer(files, grader.tests)
    try:
        if prepared is not None and prepared.episode_id == session.episode_id:
            grading = prepared.take()
        else:
            if prepared is not None:
                prepared.close()  # another episode's: never used for this one
            grading = Session(grader_policy(session.policy, image=image),
                              run_id=session.run_id, episode_id=session.episode_id,
                              host=session.host, **kwargs)
            prepared = None
    except BastionError as exc:
        return failed(f"the grader session could not be built: {exc}", skipped=tuple(skipped))
    with grading:
        try:
            if image:
                _write_into_image(grading, workspace, files, deleted, grader.tests)
            elif prepared is not None:
                # made ahead with the pristine tests only (written before its sandbox
                # existed, masked read-only since, and nothing of the grader session's
                # has run): the agent's files now, from the host
                _lay_files(grading.workspace, grading.host_uid, files, [], {})
        except OSError as exc:
            return failed(f"the agent's files could not be laid into the grader's "
                          f"workspace: {exc}", session_id=grading.session_id)
        call_id = "grade" if step is None else f"grade-{step}"
        try:
            result = grading.exec(list(grader.command), step=step, call_id=call_id,
                                  timeout=grader.timeout)
        except SessionBroken as exc:
            result = None
            reason = f"the grader's sandbox died: {exc}"
        grading.settle()
        verdicts = tuple(v.to_dict() for v in grading.verdicts)
        ended = grading.ended
    common = {"session_id": grading.session_id, "copied": tuple(files),
              "skipped": tuple(skipped), "verdicts": verdicts}
    if result is None:
        return failed(reason, **common)
    if ended is not None:
        return failed(f"the grader session was ended: {ended}", **common)
    if not result.ok:
        return failed(f"the grader's command failed ({result.outcome.value}, exit "
                      f"{result.exit_code})", **common)
    if grader.pass_marker is not None and grader.pass_marker not in result.stdout:
        return failed(f"{grader.pass_marker!r} missing from the grader's output", **common)
    return GradeResult(True, "passed", time.monotonic() - started, **common)
