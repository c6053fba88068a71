"""The file sensor: writes to protected paths and persistence locations.

Two mechanisms, because each misses what the other sees:

* real time: fanotify marks (inotify watches where fanotify is unavailable) on the
  workspace root, the fixed persistence directories (``persistence.WATCH_DIRS``,
  added as the agent creates them) and the protected paths; each change there
  becomes a ``file.write`` event;
* end of episode: a snapshot of every persistence location and protected file taken
  at registration is compared with one taken when the session ends (or whenever
  ``diff`` is called); each difference becomes a ``file.diff`` event. This finds
  locations deep in the tree (hooks of a nested git repository, a ``.pth`` in a
  virtualenv) that no watch covers.

Reads of the credential stores in the workspace (HOME: ~/.ssh keys, ~/.aws, ~/.kube,
browser profiles, .netrc...) are watched too, with fanotify only (``FAN_ACCESS`` on
the few directories that hold stores, followed as they appear): each becomes a
``file.read`` event charged to the reader's call, with what the reader is to the
store (``credstores.role``), for the rule that tells a collector from ssh using its
key or tar archiving the workspace.

A real-time event is charged to the *writer's* call, like a process event: fanotify
reports the writer's pid, whose call cgroup names the call (``file.attribution =
writer``), so a background process of call c1 writing ``.bashrc`` during c2 is
charged to c1. A writer outside the session (bastion itself, the host) is not the
agent: its writes are not reported. Where the writer cannot be known (inotify, or a
writer that exited before it could be looked up) the event is charged to the
session's most recent call (``file.attribution = latest_call``); the diff is charged
to no call. A queue overflow is event loss and is treated like the process
sensor's: ``telemetry.loss``, then the session is frozen.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import select
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contracts import CallRef, EventSink, SessionState, Watched, make_event
from ..errors import InternalError
from ..events import EventKind
from . import credstores
from . import inotify as ino
from .fanotify import FAN_ACCESS, Fanotify
from .guard import Observed, report_loss, run_guarded, telemetry
from .persistence import WATCH_DIRS, classify, judge_file
from .procfs import read_cgroup

__all__ = ["FileSensor", "Snapshot"]

SANDBOX_WORKSPACE = "/workspace"
_MASK = (ino.IN_CLOSE_WRITE | ino.IN_CREATE | ino.IN_DELETE | ino.IN_MOVED_FROM
         | ino.IN_MOVED_TO | ino.IN_ATTRIB)
_HASH_LIMIT = 1024 * 1024
_MAX_SCAN_ENTRIES = 100_000
_MAX_PROTECTED_DIRS = 2_000
_MAX_SWEEP_ENTRIES = 2_000  # directories and changed entries per look (a few ms)
_SETID = stat.S_ISUID | stat.S_ISGID
_ANY_EXEC = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH

# workspace-relative path -> (inode, mode, ctime_ns) of a setuid/setgid executable
SetidFiles = dict[str, tuple[int, int, int]]

# (size, mtime_ns, mode, sha256 or "")
Entry = tuple[int, int, int, str]


@dataclass
class Snapshot:
    """Persistence locations and protected files: sandbox path -> (class, location, entry)."""

    files: dict[str, tuple[str, str, Entry]] = field(default_factory=dict)
    complete: bool = True


@dataclass
class _Watched:
    session: Observed
    root: Path  # host directory
    sandbox_path: str  # the same directory as the sandbox sees it
    location: str  # "persistence" or "protected"
    rel: str  # relative to the workspace for persistence watches
    reads: bool = False  # reads of credential stores here are reported (fanotify only)


def _entry(path: Path, st: os.stat_result) -> Entry:
    digest = ""
    if stat.S_ISREG(st.st_mode) and st.st_size <= _HASH_LIMIT:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                h = hashlib.sha256()
                while chunk := os.read(fd, 1 << 16):
                    h.update(chunk)
                digest = h.hexdigest()
            finally:
                os.close(fd)
    return (st.st_size, st.st_mtime_ns, st.st_mode, digest)


def _protected_paths(session: Watched) -> list[tuple[Path, str]]:
    """(host path, sandbox path) of each protected entry of the policy, resolved the
    way the sandbox binds them: relative paths are inside the workspace."""
    rootfs = os.path.realpath(session.policy.sandbox.rootfs)
    out = []
    for raw in session.policy.sandbox.protected:
        inside = os.path.normpath(raw if raw.startswith("/") else
                                  os.path.join(SANDBOX_WORKSPACE, raw))
        if inside == SANDBOX_WORKSPACE or inside.startswith(SANDBOX_WORKSPACE + "/"):
            host = session.workspace / os.path.relpath(inside, SANDBOX_WORKSPACE)
        else:
            host = Path(rootfs) / inside.lstrip("/")
        out.append((host, inside))
    return out


class SetidSweep:
    """The setuid/setgid executables of one workspace, looked for again at each call's
    end at the cost of one ``lstat`` per directory: a directory whose inode and mtime
    are unchanged has the same entries as at the last look, so only its known
    subdirectories are visited; the files of a changed directory are ``lstat``-ed.
    Creating a file (tar, cp, unzip, install and rsync write new files or rename new
    ones into place) changes its directory's mtime; a file made setuid *in
    place* in an unchanged directory (chmod of an existing file, a copy over an
    existing name) is not seen here: the command rules judge chmod/setcap/install
    modes and interpreter chmod calls before they run. At most ``budget`` entries are
    looked at per look: a larger workspace is covered over several looks, and what
    appears in its far part is charged to the call during which the look reached it."""

    def __init__(self, root: Path, budget: int = _MAX_SWEEP_ENTRIES) -> None:
        self.root = root
        self.budget = budget
        self.files: SetidFiles = {}  # workspace-relative path -> (inode, mode, ctime)
        # directory (relative, "" for the root) -> ((inode, mtime_ns), its subdirectories)
        self._dirs: dict[str, tuple[tuple[int, int], tuple[str, ...]]] = {}
        self._resume: list[str] = []  # directories a look ran out of budget before

    def look(self) -> list[tuple[str, int, str]]:
        """(path, mode, "create" or "chmod") of each setuid/setgid executable that is
        new or changed since the last look; the first look only learns. A look that
        runs out of budget stops, and the next one goes on from there (a workspace
        larger than the budget is covered over several calls)."""
        before = dict(self.files)
        first = not self._dirs
        budget = self.budget
        stack = self._resume or [""]
        self._resume = []
        while stack:
            if budget <= 0:
                self._resume = stack
                break
            rel = stack.pop()
            path = self.root / rel if rel else self.root
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            key = (st.st_ino, st.st_mtime_ns)
            known = self._dirs.get(rel)
            budget -= 1
            if known is not None and known[0] == key:
                stack.extend(known[1])
                continue
            subdirs, budget = self._scan(rel, path, budget)
            self._dirs[rel] = (key, tuple(subdirs))
            stack.extend(subdirs)
        if first:
            while self._resume:  # the baseline is learnt whole, whatever it costs
                self.look()
            return []
        return [(rel, entry[1], "create" if rel not in before else "chmod")
                for rel, entry in sorted(self.files.items()) if before.get(rel) != entry]

    def _scan(self, rel: str, path: Path, budget: int) -> tuple[list[str], int]:
        """Read a changed directory: its subdirectories, and its setid files now."""
        for f in [f for f in self.files if posixpath.dirname(f) == rel]:
            del self.files[f]
        subdirs: list[str] = []
        try:
            it = os.scandir(path)
        except OSError:
            return subdirs, budget
        with it:
            for entry in it:  # whole: a directory's entries are never cached in part
                budget -= 1
                child = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(child)
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_mode & _SETID and st.st_mode & _ANY_EXEC:
                    self.files[child] = (st.st_ino, st.st_mode, st.st_ctime_ns)
        return subdirs, budget


def setid_files(root: Path, budget: int = _MAX_SWEEP_ENTRIES) -> SetidFiles:
    """Every regular file under ``root`` (symlinks not followed) with the setuid or
    setgid bit and an execute bit: what the kernel would run with another identity if
    nothing (nosuid, no_new_privs) stopped it. A setgid file without an execute bit is
    a mandatory-locking mark, not a program."""
    sweep = SetidSweep(root, budget)
    sweep.look()  # the first look learns the whole tree
    return dict(sweep.files)


def take_snapshot(session: Watched) -> Snapshot:
    snap = Snapshot()
    workspace = session.workspace
    budget = _MAX_SCAN_ENTRIES
    for root, dirs, files in os.walk(workspace, followlinks=False):
        budget -= len(dirs) + len(files)
        if budget < 0:
            snap.complete = False
            break
        rel_root = os.path.relpath(root, workspace)
        rel_root = "" if rel_root == "." else rel_root + "/"
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = rel_root + name
            cls = classify(rel)
            if cls is None:
                continue
            path = Path(root) / name
            with contextlib.suppress(OSError):
                snap.files[f"{SANDBOX_WORKSPACE}/{rel}"] = (
                    cls, "persistence", _entry(path, path.lstat()))
    for host_path, sandbox_path in _protected_paths(session):
        if host_path.is_file():
            with contextlib.suppress(OSError):
                snap.files[sandbox_path] = ("protected", "protected",
                                            _entry(host_path, host_path.lstat()))
            continue
        for root, _dirs, files in os.walk(host_path, followlinks=False):
            budget -= len(files)
            if budget < 0:
                snap.complete = False
                break
            for name in files:
                path = Path(root) / name
                rel = os.path.relpath(path, host_path)
                with contextlib.suppress(OSError):
                    snap.files[f"{sandbox_path}/{rel}"] = ("protected", "protected",
                                                           _entry(path, path.lstat()))
    return snap


class FileSensor:
    """Host-wide observer: one fanotify group (and one inotify instance for what
    fanotify cannot mark) and one thread for all sessions."""

    def __init__(self, *, fanotify: bool = True) -> None:
        self._fan: Fanotify | None = None
        if fanotify:
            with contextlib.suppress(OSError):  # no CAP_SYS_ADMIN, or an old kernel
                self._fan = Fanotify()
        self._ino = ino.Inotify()
        self._lock = threading.Lock()
        self._handling = threading.Lock()  # held while a file event is handled
        # (backend, id) -> what is watched there; a directory several sessions protect
        # (a shared /grader) has one entry per session
        self._watches: dict[tuple[str, int], list[_Watched]] = {}
        self._baselines: dict[str, Snapshot] = {}
        self._setid: dict[str, SetidSweep] = {}  # session id -> its workspace's sweep
        self._sinks: dict[str, EventSink] = {}
        # session id -> the credential-store reads reported (call, path, exe), and the
        # store kinds each call's "program" readers read (credstores.role)
        self._reads: dict[str, set[tuple[str | None, str, str]]] = {}
        self._read_kinds: dict[str, dict[str | None, set[str]]] = {}
        self._recent_reads: set[tuple[int, str, int | None]] = set()  # (dir id, name, pid)
        self._file_marks: dict[str, set[str]] = {}  # session id -> stores marked one by one
        self._stop = threading.Event()
        self._broken: str | None = None
        self.events = 0
        self._thread = threading.Thread(target=run_guarded, args=(
            "file", self._run, self._watched, self._set_broken), name="bastion-files",
            daemon=True)
        self._thread.start()

    # -- observer protocol --------------------------------------------------------------

    def register(self, view: Watched, sink: EventSink) -> None:
        if self._broken:
            raise InternalError(f"the file sensor has failed: {self._broken}")
        session = Observed(view, sink)
        with self._lock:
            self._watch(session, view.workspace, SANDBOX_WORKSPACE, "persistence", "")
            for rel in sorted(WATCH_DIRS):
                path = view.workspace / rel
                if path.is_dir() and not path.is_symlink():
                    self._watch(session, path, f"{SANDBOX_WORKSPACE}/{rel}", "persistence", rel)
            for host_path, sandbox_path in _protected_paths(view):
                self._watch_tree(session, host_path, sandbox_path)
            self._watch_stores(session, view.workspace)
            self._sinks[view.session_id] = sink
        self._baselines[view.session_id] = take_snapshot(view)
        sweep = SetidSweep(view.workspace)
        sweep.look()  # learns what is there already (a task's own files are not the agent's)
        self._setid[view.session_id] = sweep

    def call_ended(self, view: Watched, call: CallRef | None) -> None:
        """A call of ``view`` ended: report each setuid/setgid executable that
        appeared or changed in the workspace since the last look, charged to ``call``.
        Called by the session before it settles the call's verdicts."""
        sink = self._sinks.get(view.session_id)
        sweep = self._setid.get(view.session_id)
        if sink is None or sweep is None or view.state is SessionState.CLOSED:
            return
        for rel, mode, op in sweep.look():
            self.events += 1
            sink.submit(make_event(
                view, EventKind.FILE_WRITE, call=call, **{
                    "file.path": f"{SANDBOX_WORKSPACE}/{rel}", "file.op": op,
                    "file.location": "workspace", "file.class": "setid",
                    "file.mode": f"{stat.S_IMODE(mode):04o}",
                    "file.attribution": "call_end" if call is not None else "none"}))

    def unregister(self, view: Watched) -> None:
        session = view
        try:
            self.diff(view)  # also after a termination: the diff is forensics then
        finally:
            with self._lock:
                self._sinks.pop(view.session_id, None)
                for key, entries in list(self._watches.items()):
                    kept = [w for w in entries if w.session.view is not view]
                    if kept:
                        self._watches[key] = kept
                        continue
                    del self._watches[key]
                    with contextlib.suppress(OSError):
                        self._backend(key[0]).remove(key[1])
            with self._handling:
                pass  # an event in flight for this session is delivered before it goes
            self._baselines.pop(session.session_id, None)
            self._setid.pop(session.session_id, None)
            self._reads.pop(session.session_id, None)
            for path in self._file_marks.pop(session.session_id, set()):
                if self._fan is not None:
                    self._fan.remove_file(path, FAN_ACCESS)
            self._read_kinds.pop(session.session_id, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._ino.close()
        if self._fan is not None:
            self._fan.close()

    @property
    def attributes_writers(self) -> bool:
        """True when file events are charged to the writer's call (fanotify)."""
        return self._fan is not None

    def _backend(self, name: str) -> Any:
        return self._fan if name == "fan" else self._ino

    # -- the end-of-episode diff --------------------------------------------------------

    def diff(self, session: Watched) -> list[dict[str, Any]]:
        """Compare the persistence locations with the baseline, emit one ``file.diff``
        event per difference, make the current state the new baseline."""
        before = self._baselines.get(session.session_id, Snapshot())
        after = take_snapshot(session)
        self._baselines[session.session_id] = after
        changes: list[dict[str, Any]] = []
        for path in sorted(set(before.files) | set(after.files)):
            old = before.files.get(path)
            new = after.files.get(path)
            if old == new:
                continue
            if old is None:
                op = "create"
            elif new is None:
                op = "delete"
            elif old[2][2] != new[2][2] and old[2][3] == new[2][3]:
                op = "chmod"
            else:
                op = "write"
            cls, location, entry = new if new is not None else old  # type: ignore[misc]
            changes.append({
                "file.path": path, "file.op": op, "file.location": location,
                "file.class": cls, "file.size": entry[0] if new is not None else -1,
                "file.sha256": entry[3] if new is not None else ""})
            if location == "persistence":
                changes[-1]["file.runs_code"] = _runs_code(session.workspace, path, op)
        sink = self._sinks.get(session.session_id)
        if sink is None:
            return changes
        if not after.complete:
            sink.submit(telemetry(session, "files", f"workspace larger than "
                                  f"{_MAX_SCAN_ENTRIES} entries: the episode diff covers "
                                  "only part of it", gap=True))
        for change in changes:
            sink.submit(make_event(session, EventKind.FILE_DIFF, **change))
        return changes

    # -- real time ----------------------------------------------------------------------

    def _watch(self, session: Observed, path: Path, sandbox_path: str, location: str,
               rel: str, *, reads: bool = False, mark_reads: bool | None = None) -> None:
        """Watch a directory; ``reads``: reads of credential stores reported there
        (``mark_reads`` False: only files marked one by one are, see _mark_store)."""
        key: tuple[str, int] | None = None
        if self._fan is not None:
            try:
                mask = _MASK | (FAN_ACCESS if (reads if mark_reads is None else mark_reads) else 0)
                key = ("fan", self._fan.add_dir(str(path), mask))
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return  # not a directory (any more): nothing to watch
                key = None  # a filesystem fanotify cannot mark: inotify watches it
        if key is None:
            try:
                key = ("ino", self._ino.add_dir(str(path), _MASK))
            except OSError:
                return  # not a directory (any more): nothing to watch
        old = self._watches.get(key, [])
        reads = key[0] == "fan" and (reads or any(
            w.reads for w in old if w.session.view is session.view))
        entries = [w for w in old if w.session.view is not session.view]
        self._watches[key] = [*entries, _Watched(session, path, sandbox_path, location, rel,
                                                 reads)]

    def _watch_stores(self, session: Observed, workspace: Path) -> None:
        """Watch reads in the directories of the workspace (HOME) that hold credential
        stores, and follow the directories stores may appear under (lock held). Only
        with fanotify: inotify cannot say who opened. The workspace root is watched
        for reads only when it holds a store itself (.netrc, .git-credentials...), so
        the reads of an ordinary project's files cost nothing."""
        if self._fan is None:
            return
        for name in sorted(credstores.ROOT_STORES):
            self._mark_store(session, workspace, name)
        for rel in sorted(credstores.CRED_DIRS | credstores.FOLLOW_DIRS):
            path = workspace / rel
            if path.is_dir() and not path.is_symlink():
                self._watch(session, path, f"{SANDBOX_WORKSPACE}/{rel}", "persistence", rel,
                            reads=credstores.watch_dir(rel))
        for parent in sorted(credstores.PROFILE_PARENTS):
            with contextlib.suppress(OSError):
                for child in os.scandir(workspace / parent):
                    rel = f"{parent}/{child.name}"
                    if child.is_dir(follow_symlinks=False):
                        self._watch(session, Path(child.path), f"{SANDBOX_WORKSPACE}/{rel}",
                                    "persistence", rel, reads=True)

    def _watch_tree(self, session: Observed, root: Path, sandbox_root: str) -> None:
        if not root.is_dir():
            return
        for count, (dirpath, _dirs, _files) in enumerate(os.walk(root, followlinks=False)):
            if count >= _MAX_PROTECTED_DIRS:
                break
            rel = os.path.relpath(dirpath, root)
            sandbox_path = sandbox_root if rel == "." else f"{sandbox_root}/{rel}"
            self._watch(session, Path(dirpath), sandbox_path, "protected", "")

    def _watched(self) -> list[Observed]:
        with self._lock:
            return list({id(w.session.sink): w.session for entries in self._watches.values()
                         for w in entries}.values())

    def _set_broken(self, reason: str) -> None:
        self._broken = reason

    def _run(self) -> None:
        poller = select.poll()
        backends = [("ino", self._ino)] + ([("fan", self._fan)] if self._fan else [])
        for _name, backend in backends:
            poller.register(backend.fd, select.POLLIN)
        while not self._stop.is_set():
            try:
                ready = {fd for fd, _ in poller.poll(200)}
            except InterruptedError:
                continue
            for name, backend in backends:
                if backend.fd not in ready:
                    continue
                with self._handling:
                    for ev in backend.read():
                        self._handle(name, ev)

    def _handle(self, backend: str, ev: ino.InotifyEvent) -> None:
        if ev.mask & ino.IN_Q_OVERFLOW:
            self._overflow()
            return
        if backend == "fan" and ev.mask & FAN_ACCESS:
            self._store_read(ev)
            if not ev.mask & _MASK:
                return
        found: list[tuple[str, str]] = []  # (workspace-relative path, class) already there
        new_dir = bool(ev.mask & ino.IN_ISDIR and ev.mask & (ino.IN_CREATE | ino.IN_MOVED_TO))
        with self._lock:
            entries = self._watches.get((backend, ev.wd))
            if not entries or ev.mask & ino.IN_IGNORED:
                self._watches.pop((backend, ev.wd), None)
                return
            first = entries[0]
        first_rel = f"{first.rel}/{ev.name}" if first.rel else ev.name
        if (len(entries) == 1 and not new_dir and first.location != "protected"
                and classify(first_rel) is None
                and not (first.rel == "" and ev.name in credstores.ROOT_STORES)):
            return  # an ordinary file: no need to know who wrote it (10k files stay cheap)
        writer = _Writer.of(ev.pid)
        with self._lock:
            watched = writer.pick(entries)
            if watched is None:
                return  # bastion or the host wrote in a workspace: not the agent
            session = watched.session
            if new_dir:
                self._new_dir(watched, ev.name, found)
            elif (watched.location == "persistence" and watched.rel == ""
                  and ev.name in credstores.ROOT_STORES
                  and ev.mask & (ino.IN_CREATE | ino.IN_MOVED_TO)):
                # a store made at the root later (a task's setup): its reads count too
                self._mark_store(session, watched.root, ev.name)
        for rel, cls in found:
            self._emit(session, f"{SANDBOX_WORKSPACE}/{rel}", "create", "persistence", cls,
                       writer)
        if watched.location == "protected":
            cls: str | None = "protected"
        else:
            cls = classify(f"{watched.rel}/{ev.name}" if watched.rel else ev.name)
        op = _op(ev.mask)
        if cls is None or op is None:
            return
        self._emit(session, f"{watched.sandbox_path}/{ev.name}", op, watched.location, cls,
                   writer)

    def _emit(self, session: Observed, path: str, op: str, location: str, cls: str,
              writer: _Writer) -> None:
        view = session.view
        if view.state is SessionState.CLOSED:
            return
        fields: dict[str, Any] = {"file.path": path, "file.op": op, "file.location": location,
                                  "file.class": cls}
        if location == "persistence":  # content decides: .git/config from git init is not
            fields["file.runs_code"] = _runs_code(view.workspace, path, op)
        if writer.outside:
            call = None
            fields["file.attribution"] = "outside"
        elif writer.cgroup is not None:
            call = view.call_for_cgroup(writer.cgroup)
            fields["file.attribution"] = "writer" if call is not None else "none"
        else:
            call = view.latest_call()
            fields["file.attribution"] = "latest_call" if call is not None else "none"
        self.events += 1
        session.sink.submit(make_event(view, EventKind.FILE_WRITE, call=call,
                                       pid=writer.pid if call is not None else None, **fields))

    def _new_dir(self, watched: _Watched, name: str, found: list[tuple[str, str]]) -> None:
        """Follow a directory the agent just created (lock held). Files it already
        holds were created before the watch existed: they are returned in ``found``."""
        path = watched.root / name
        if path.is_symlink():
            return
        if watched.location == "protected":
            self._watch(watched.session, path, f"{watched.sandbox_path}/{name}", "protected", "")
            return
        rel = f"{watched.rel}/{name}" if watched.rel else name
        creds = self._fan is not None and (credstores.watch_dir(rel)
                                           or rel in credstores.FOLLOW_DIRS)
        if rel not in WATCH_DIRS and not creds:
            return
        reads = self._fan is not None and credstores.watch_dir(rel)
        self._watch(watched.session, path, f"{SANDBOX_WORKSPACE}/{rel}", "persistence", rel,
                    reads=reads)
        child_watch = _Watched(watched.session, path, f"{SANDBOX_WORKSPACE}/{rel}",
                               "persistence", rel, reads)
        with contextlib.suppress(OSError):
            for child in os.scandir(path):
                if child.is_dir(follow_symlinks=False):
                    self._new_dir(child_watch, child.name, found)
                elif rel not in WATCH_DIRS:
                    continue
                else:
                    cls = classify(f"{rel}/{child.name}")
                    if cls is not None:
                        found.append((f"{rel}/{child.name}", cls))

    def _mark_store(self, session: Observed, workspace: Path, name: str) -> None:
        """Watch reads of the store ``name`` at the workspace root (.netrc,
        .git-credentials...) with a mark on the file itself (lock held): a mark on
        the root would report every read of every file of the project."""
        path = workspace / name
        if self._fan is None or path.is_symlink() or not path.is_file():
            return
        try:
            self._fan.add_file(str(path), FAN_ACCESS)
        except OSError:
            return
        self._file_marks.setdefault(session.view.session_id, set()).add(str(path))
        self._watch(session, workspace, SANDBOX_WORKSPACE, "persistence", "", reads=True,
                    mark_reads=False)

    def _store_read(self, ev: ino.InotifyEvent) -> None:
        """A file was read in a directory watched for reads (FAN_ACCESS: a read(), so
        the shell creating a store with ``printf > ~/.aws/credentials`` is no reader):
        when it is a credential store, report the read (``file.read``) charged to the
        reader's call, with what the reader is to the store (credstores.role) and how
        many kinds of store the call's other programs have read so far
        (``file.store_kinds``). The reader is looked at while it reads, so it is alive."""
        if ev.mask & ino.IN_ISDIR:
            return  # a directory listed, not a store read
        recent = (ev.wd, ev.name, ev.pid)
        if recent in self._recent_reads:
            return  # the same reader's next read() of the same store (one lookup each)
        if len(self._recent_reads) >= 4096:
            self._recent_reads.clear()
        self._recent_reads.add(recent)
        with self._lock:
            entries = [w for w in self._watches.get(("fan", ev.wd), []) if w.reads]
        if not entries:
            return
        first = entries[0]
        rel = f"{first.rel}/{ev.name}" if first.rel else ev.name
        kind = credstores.store_kind(rel)
        if kind is None:
            return
        reader = _Writer.of(ev.pid)
        exe = script = None
        if ev.pid:
            with contextlib.suppress(OSError):
                exe = os.readlink(f"/proc/{ev.pid}/exe")
                script = _script(ev.pid)
        with self._lock:
            watched = reader.pick(entries)
        if watched is None or reader.outside:
            return  # bastion (the snapshot's hashes, the gateway's fingerprints) or the host
        view = watched.session.view
        if view.state is SessionState.CLOSED:
            return
        if reader.cgroup is not None:
            call = view.call_for_cgroup(reader.cgroup)
            attribution = "writer" if call is not None else "none"
        else:
            call = view.latest_call()
            attribution = "latest_call" if call is not None else "none"
        call_id = call.call_id if call is not None else None
        who = credstores.role(exe, kind, script)
        path = f"{SANDBOX_WORKSPACE}/{rel}"
        with self._lock:
            seen = self._reads.setdefault(view.session_id, set())
            if (call_id, path, exe or "") in seen:
                return  # ssh opening its key twice is one read
            seen.add((call_id, path, exe or ""))
            kinds = self._read_kinds.setdefault(view.session_id, {}).setdefault(call_id, set())
            if who == "program":
                kinds.add(kind)
            count = len(kinds)
        self.events += 1
        watched.session.sink.submit(make_event(
            view, EventKind.FILE_READ, call=call, pid=ev.pid if call is not None else None,
            **{"file.path": path, "file.op": "read", "file.location": "credential",
               "file.class": kind, "file.store_owned": kind in credstores.OWNED,
               "file.reader": exe or "", "file.reader_role": who,
               "file.store_kinds": count, "file.attribution": attribution}))

    def _overflow(self) -> None:
        report_loss("files", "inotify queue overflow: file events were dropped",
                    self._watched())


@dataclass(frozen=True)
class _Writer:
    """The process that made a change, as far as it can be known: its pid (fanotify)
    and its cgroup (read at once: it may exit any moment)."""

    pid: int | None
    cgroup: str | None

    @classmethod
    def of(cls, pid: int | None) -> _Writer:
        return cls(pid, read_cgroup(pid) if pid else None)

    @property
    def outside(self) -> bool:
        """A known writer that is none of the agent's calls (bastion, the host)."""
        return self.cgroup is not None and "/call-" not in self.cgroup

    def pick(self, entries: list[_Watched]) -> _Watched | None:
        """The watch of the session the writer belongs to. A writer outside every
        session is not the agent: its writes in a workspace are not reported (None),
        while a protected path changed from outside is (tampering with the grader
        from outside is still tampering), charged to no call."""
        if self.cgroup is None:
            return entries[-1]  # unknown writer: the (usually only) session watching
        for watched in entries:
            if watched.session.view.owns_cgroup(self.cgroup) and not self.outside:
                return watched
        if self.outside and entries[-1].location == "protected":
            return entries[-1]
        return None


def _script(pid: int) -> str | None:
    """The first operand of a process's command line (the script an interpreter
    runs: ``python3 /usr/bin/twine``), None when it has none."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read(4096).split(b"\0")
    for arg in argv[1:]:
        if arg and not arg.startswith(b"-"):
            return os.fsdecode(arg)
        if arg in (b"-c", b"-e", b"-m"):
            return None  # inline code or a module: no script file
    return None


def _runs_code(workspace: Path, path: str, op: str) -> bool:
    """Does the persistence file at sandbox ``path`` now hold content that runs code
    later (judged by bastion.analysis.persistence)? A delete plants nothing."""
    if op == "delete" or not (path == SANDBOX_WORKSPACE or path.startswith(SANDBOX_WORKSPACE + "/")):
        return op != "delete"
    rel = os.path.relpath(path, SANDBOX_WORKSPACE)
    return judge_file(rel, workspace / rel) is not None


def _op(mask: int) -> str | None:
    if mask & ino.IN_CLOSE_WRITE:
        return "write"
    if mask & ino.IN_CREATE:
        return "create"
    if mask & ino.IN_MOVED_TO:
        return "rename"
    if mask & (ino.IN_DELETE | ino.IN_MOVED_FROM):
        return "delete"
    if mask & ino.IN_ATTRIB:
        return "chmod"
    return None
