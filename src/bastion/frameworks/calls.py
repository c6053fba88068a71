"""Framework-neutral tool calls on a bastion Session: files in and out, and the
exec semantics agent frameworks expect (cwd relative to the task directory, exec
failures as exceptions, bastion's refusals as results).

Every byte goes through ``Session.exec`` / ``Session.write_file``, the session's one
choke point, so a framework's file copy is observed, attributed and judged like any
other call (a write to a protected grader path is reward tampering whoever asks).

Why reads run base64 in the sandbox: ``ExecResult.stdout`` is text (decoded with
replacement), and the sandbox keeps 8 MiB of each stream, so binary files and large
ones come back base64-encoded in chunks. Reads never follow a path from the host side
(``/proc/PID/root``): an agent's symlink would then resolve against the host's root.
"""

from __future__ import annotations

import base64
import errno
import os
import posixpath
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SessionBroken, SessionClosed
from ..events import Action, Event, EventKind, Verdict
from ..policy import Policy
from ..results import ExecResult, Outcome
from ..sandbox.bwrap import WORKSPACE
from ..session import Session

__all__ = [
    "Contained",
    "SessionGone",
    "action_records",
    "read_file",
    "run",
    "stage_task_files",
    "task_dir",
    "write_file",
]

# raw bytes per read call: base64 makes it 4/3 larger, under the sandbox's 8 MiB a stream
READ_CHUNK = 4 * 1024 * 1024

# exit codes of the read script are errno values: the provider maps them to exceptions
_READ_SCRIPT = r"""
f=$1
[ -e "$f" ] || exit 2
[ -d "$f" ] && exit 21
[ -r "$f" ] || exit 13
n=$(wc -c < "$f") || exit 5
echo "$n"
[ "$n" -le "$2" ] || exit 0
head -c "$3" < "$f" | base64
"""
_CHUNK_SCRIPT = r"""tail -c "+$2" < "$1" | head -c "$3" | base64"""

# what the supervisor writes when execvpe itself fails (sandbox/supervisor.py)
_CANNOT_RUN = re.compile(r"^bastion: cannot run .*\[Errno (\d+)\]")

# actions that mean bastion stopped what the agent did, rather than the command failing
_CONTAINING = frozenset({Action.DENY, Action.KILL, Action.CUT, Action.FREEZE,
                         Action.TERMINATE, Action.QUARANTINE})


class SessionGone(RuntimeError):
    """The session cannot run calls any more for a reason that is not a verdict
    (closed by its owner, or bastion itself broke): the framework's "sandbox
    unavailable", never something to show the model as command output."""


@dataclass(frozen=True)
class Contained:
    """The session was ended by a policy verdict: every further call is refused.
    A result for the agent, not an error for the harness."""

    reason: str
    verdicts: tuple[Verdict, ...]

    def as_result(self, call_id: str) -> ExecResult:
        text = f"bastion ended this episode: {self.reason}"
        return ExecResult(stdout="", stderr=text + "\n", exit_code=126, duration=0.0,
                          timed_out=False, outcome=Outcome.TERMINATED, call_id=call_id,
                          reason=text)


def stage_task_files(source: Path, policy: Policy, workspace: Path, uid: int) -> None:
    """Copy a task directory into a workspace from the host (``Session(prepare=...)``):
    it lands in /workspace, also in an image session. Files under a path the policy
    protects stay root-owned and read-only; the rest belong to the agent's uid. Links
    in ``source`` are skipped, never followed."""
    protected = [p if p.startswith("/") else posixpath.normpath(posixpath.join(WORKSPACE, p))
                 for p in policy.sandbox.protected]

    def is_protected(rel: str) -> bool:
        inside = posixpath.join(WORKSPACE, rel)
        return any(inside == p or inside.startswith(p.rstrip("/") + "/") for p in protected)

    for src in sorted(source.rglob("*")):
        rel = src.relative_to(source).as_posix()
        dest = workspace / rel
        if src.is_symlink():
            continue
        if src.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            os.chmod(dest, 0o755)
        else:
            shutil.copyfile(src, dest)
            os.chmod(dest, 0o755 if os.access(src, os.X_OK) else 0o644)
        if not is_protected(rel):
            os.chown(dest, uid, uid)


def action_records(events: list[Event]) -> list[dict[str, Any]]:
    """What bastion did about its verdicts (the session's ``action`` events), for a
    framework's log: which action, on what, for which rule and verdict, whether it
    worked, attributed to the call."""
    return [{"action": e.fields.get("action.name"), "target": e.fields.get("action.target"),
             "rule_id": e.fields.get("action.rule"), "verdict_id": e.fields.get("action.verdict"),
             "ok": e.fields.get("action.ok"), "detail": e.fields.get("action.detail"),
             "call_id": e.call_id, "step": e.step, "episode_id": e.episode_id,
             "run_id": e.run_id}
            for e in events if e.kind is EventKind.ACTION]


def task_dir(session: Session) -> str:
    """The per-sample working directory inside the sandbox: the image's WORKDIR, or
    /workspace."""
    view = session.image_view
    return view.cwd if view is not None else WORKSPACE


def _resolve(session: Session, path: str) -> str:
    return path if path.startswith("/") else posixpath.join(task_dir(session), path)


def run(session: Session, cmd: str | list[str], *, stdin: str | bytes | None = None,
        cwd: str | None = None, env: dict[str, str] | None = None,
        timeout: float | None = None, call_id: str | None = None) -> ExecResult:
    """One call through ``Session.exec``. A session ended by a verdict gives a
    TERMINATED result (``Contained``); one that is closed or broken for another reason
    raises ``SessionGone``; a program that cannot be executed at all raises the
    ``OSError`` its errno names (``PermissionError`` for a non-executable file)."""
    try:
        result = session.exec(cmd, stdin=stdin, env=env, timeout=timeout, call_id=call_id,
                              cwd=_resolve(session, cwd) if cwd else None)
    except SessionClosed as exc:
        raise SessionGone(str(exc)) from exc
    except SessionBroken as exc:
        contained = containment(session)
        if contained is None:
            raise SessionGone(str(exc)) from exc
        return contained.as_result(call_id or "")
    if not isinstance(cmd, str) and result.exit_code == 127 and result.outcome is Outcome.EXIT_NONZERO:
        # the supervisor's one line, before the program existed: nothing else was written
        match = (_CANNOT_RUN.match(result.stderr) if not result.stdout
                 and result.stderr.count("\n") == 1 else None)
        # only when argv[0] itself could not be executed (a missing cwd says ENOENT too:
        # that is the command's failure, reported as a result like the local sandbox's)
        if match and int(match.group(1)) in (errno.EACCES, errno.ENOEXEC, errno.EPERM):
            raise PermissionError(int(match.group(1)), result.stderr.strip(), cmd[0])
    return result


def containment(session: Session) -> Contained | None:
    """Why the session refuses calls, when a policy verdict is the reason."""
    if not session.ended:
        return None
    stopping = tuple(v for v in session.verdicts if v.action in _CONTAINING)
    if not stopping:
        return None
    return Contained(session.ended, stopping)


def _raise_for(code: int, path: str) -> None:
    if code == errno.ENOENT:
        raise FileNotFoundError(code, f"No such file or directory: {path}", path)
    if code == errno.EACCES:
        raise PermissionError(code, f"Permission denied: {path}", path)
    if code == errno.EISDIR:
        raise IsADirectoryError(code, f"Is a directory: {path}", path)


def _checked(session: Session, result: ExecResult, path: str, what: str) -> ExecResult:
    if result.outcome is Outcome.OK:
        return result
    if result.outcome in (Outcome.DENIED, Outcome.KILLED, Outcome.TERMINATED):
        # bastion refused the file operation (a protected path, an ended episode)
        raise PermissionError(errno.EACCES, f"bastion refused to {what} {path}: "
                              f"{result.reason}", path)
    if result.outcome is Outcome.TIMEOUT:
        raise TimeoutError(f"{what} {path} timed out")
    _raise_for(result.exit_code, path)
    raise OSError(errno.EIO, f"cannot {what} {path}: {result.stderr.strip()}", path)


def read_file(session: Session, path: str, *, limit: int | None = None) -> bytes:
    """The file's bytes, read inside the sandbox. ``limit``: raise
    ``OverflowError(size)`` instead of reading a file larger than this."""
    full = _resolve(session, path)
    cap = limit if limit is not None else 2**62
    first = run(session, ["sh", "-c", _READ_SCRIPT, "sh", full, str(cap), str(READ_CHUNK)])
    if first.outcome is Outcome.EXIT_NONZERO:
        _raise_for(first.exit_code, path)
    _checked(session, first, path, "read")
    head, _, body = first.stdout.partition("\n")
    size = int(head.strip())
    if size > cap:
        raise OverflowError(size)
    parts = [base64.b64decode(body)]
    got = len(parts[0])
    while got < size:
        more = run(session, ["sh", "-c", _CHUNK_SCRIPT, "sh", full, str(got + 1),
                             str(min(READ_CHUNK, size - got))])
        _checked(session, more, path, "read")
        chunk = base64.b64decode(more.stdout)
        if not chunk:  # the file shrank while we read it
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# why a write failed, as an errno exit code: asked of the file system, not read from a
# shell's message (bash and busybox word them differently)
_WHY_NOT_WRITTEN = r"""
f=$1; d=${f%/*}; [ -n "$d" ] || d=/
[ -d "$f" ] && exit 21
[ -d "$d" ] || exit 2
if [ -e "$f" ]; then [ -w "$f" ] || exit 13; else [ -w "$d" ] || exit 13; fi
exit 5
"""


def _why_not_written(session: Session, full: str) -> int:
    return run(session, ["sh", "-c", _WHY_NOT_WRITTEN, "sh", full]).exit_code


def write_file(session: Session, path: str, contents: str | bytes) -> None:
    """Write through ``Session.write_file`` (content judged and recorded like a
    heredoc the agent typed), creating missing parent directories."""
    full = _resolve(session, path)
    data = contents.encode() if isinstance(contents, str) else contents
    result = _write_once(session, full, data)
    if result.outcome is Outcome.EXIT_NONZERO:
        code = _why_not_written(session, full)
        if code == errno.ENOENT:
            made = run(session, ["mkdir", "-p", "--", posixpath.dirname(full)])
            if made.outcome is Outcome.OK:
                result = _write_once(session, full, data)
                code = _why_not_written(session, full) if result.outcome is not Outcome.OK else 0
        if result.outcome is Outcome.EXIT_NONZERO:
            _raise_for(code, path)
    _checked(session, result, path, "write")


def _write_once(session: Session, full: str, data: bytes) -> ExecResult:
    try:
        return session.write_file(full, data)
    except SessionClosed as exc:
        raise SessionGone(str(exc)) from exc
    except SessionBroken as exc:
        contained = containment(session)
        if contained is None:
            raise SessionGone(str(exc)) from exc
        return contained.as_result("")
