"""A workspace the operator configured on the host's disk gets the session's disk limit
(an overlay whose upper layer is the session's tmpfs, ``sandbox/scratch.py``), and
what the agent leaves there is written back when the session ends
(``sandbox/writeback.py``). Disk bombs are tried from inside real sessions; the host
side is checked with its own eyes (statvfs, the directory after close)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.sandbox import scratch
from bastion.sandbox.writeback import MAX_DEPTH, write_back

MiB = 1024 * 1024


@pytest.fixture
def host_ws() -> Iterator[Path]:
    """A workspace directory on the host's disk (/var/tmp: sandbox uids can reach it)."""
    ws = Path(tempfile.mkdtemp(prefix="bastion-ws-", dir="/var/tmp"))
    (ws / "README.md").write_text("task\n")
    (ws / "src").mkdir()
    (ws / "src" / "main.py").write_text("print('hi')\n")
    (ws / "old.txt").write_text("old\n")
    yield ws
    shutil.rmtree(ws, ignore_errors=True)


def _host_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_disk_bombs_into_a_host_workspace_fail_with_enospc(make_session, host_ws: Path) -> None:
    s = make_session({"sandbox": {"workspace": str(host_ws), "limits": {"disk": "32MiB"}}})
    before = _host_free(host_ws.parent)
    created = [e for e in s.events if e.fields.get("life.state") == "created"]
    assert "disk(workspace)" not in (created[0].fields.get("unenforced") or "")
    r = s.exec("fallocate -l 50G /workspace/f")
    assert r.exit_code != 0 and "No space left on device" in r.stderr
    r = s.exec("python3 -c \"f = open('/workspace/huge', 'wb')\nwhile True: f.write(b'x' * 2**20)\"")
    assert r.exit_code != 0 and "No space left on device" in r.stderr
    assert s.exec("rm -f /workspace/huge /workspace/f").exit_code == 0
    # hidden under a dot-dir, kept: the filling is a verdict on the call that made it
    r = s.exec("mkdir -p /workspace/.cache/x && "
               "dd if=/dev/zero of=/workspace/.cache/x/f bs=1M count=100000")
    assert r.exit_code != 0 and "No space left on device" in r.stderr
    disk = [v for v in r.verdicts if v.rule_id == "resource.disk_limit"]
    assert disk and disk[0].call_id == r.call_id
    # the host's disk gave nothing to the session while it ran: the writes sit on its
    # tmpfs (other tests write meanwhile: a margin far under the 150 GB asked for)
    assert before - _host_free(host_ws.parent) < 1024 * MiB
    used, total, _, _ = scratch.usage(host_ws)  # the overlay reports its upper layer
    assert total <= 32 * MiB + 4096 and used > 16 * MiB
    assert (host_ws / ".cache" / "x" / "f").stat().st_size <= 32 * MiB  # seen live
    s.close()
    # ... and what was kept is bounded by the limit once written back
    assert (host_ws / ".cache" / "x" / "f").stat().st_size <= 32 * MiB
    assert (host_ws / "README.md").read_text() == "task\n"


def test_honest_work_in_a_host_workspace_is_seen_live_and_kept(make_session,
                                                               host_ws: Path) -> None:
    s = make_session({"sandbox": {"workspace": str(host_ws)}})
    r = s.exec(
        "cd /workspace && head -c 100M /dev/zero > build.bin && rm old.txt && "
        "echo v2 > src/main.py && mkdir -p pkg/sub && echo x > pkg/sub/mod.py && "
        "ln -s src/main.py entry && chmod 755 src/main.py && truncate -s 1T sparse.img && "
        "rm -r src && mkdir src && echo new > src/new.py && mv pkg/sub/mod.py pkg/mod.py")
    assert r.exit_code == 0, r.stderr
    assert not [v for v in r.verdicts if v.action.value not in ("none", "alert")]
    assert (host_ws / "build.bin").stat().st_size == 100 * MiB  # the host sees it live
    s.close()
    names = sorted(str(p.relative_to(host_ws)) for p in host_ws.rglob("*"))
    assert names == ["README.md", "build.bin", "entry", "pkg", "pkg/mod.py", "pkg/sub",
                     "sparse.img", "src", "src/new.py"]
    assert (host_ws / "src" / "new.py").read_text() == "new\n"
    assert os.readlink(host_ws / "entry") == "src/main.py"
    sparse = (host_ws / "sparse.img").stat()
    assert sparse.st_size == 1 << 40 and sparse.st_blocks == 0  # still sparse
    assert (host_ws / "build.bin").stat().st_size == 100 * MiB
    uid = s.host_uid
    assert (host_ws / "src" / "new.py").stat().st_uid == uid
    assert str(host_ws) not in Path("/proc/self/mountinfo").read_text()  # detached


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A host directory overlaid as a session's would be: (lower/merged path, upper)."""
    ws, scratch_dir = tmp_path / "ws", tmp_path / "scratch"
    ws.mkdir()
    scratch_dir.mkdir()
    scratch.mount_tmpfs(scratch_dir, size=8 * MiB, inodes=1000, uid=0, mode=0o711)
    try:
        yield ws, scratch_dir
    finally:
        with contextlib.suppress(OSError):
            scratch.unmount(ws)
        scratch.unmount(scratch_dir)


def test_write_back_never_follows_a_link_out_of_the_workspace(overlay, tmp_path: Path) -> None:
    ws, scratch_dir = overlay
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("host\n")
    (ws / "evil").symlink_to(outside)  # a link the workspace already held
    (ws / "tree").mkdir()
    (ws / "tree" / "a").write_text("a\n")
    assert scratch.overlay_workspace(ws, scratch_dir) is None
    # through the overlay: replace the link by a directory of the same name, and
    # replace a directory by an opaque one
    shutil.rmtree(ws / "tree")
    os.unlink(ws / "evil")
    (ws / "evil").mkdir()
    (ws / "evil" / "f").write_text("agent\n")
    (ws / "tree").mkdir()
    (ws / "tree" / "b").write_text("b\n")
    os.mkfifo(ws / "pipe")
    scratch.unmount(ws)
    assert (outside / "f").read_text() == "host\n"  # the link was not followed
    assert not (ws / "evil").is_symlink() and (ws / "evil" / "f").read_text() == "agent\n"
    assert sorted(os.listdir(ws / "tree")) == ["b"]  # the opaque directory replaced it
    assert stat.S_ISFIFO((ws / "pipe").lstat().st_mode)
    assert str(ws) not in Path("/proc/self/mountinfo").read_text()


def test_write_back_applies_whiteouts_and_reports_what_it_skips(tmp_path: Path) -> None:
    """The upper layer's format, as overlayfs writes it, applied by hand."""
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    (lower / "d").mkdir(parents=True)
    (lower / "d" / "gone").write_text("x")
    (lower / "d" / "stays").write_text("y")
    (upper / "d").mkdir(parents=True)
    os.mknod(upper / "d" / "gone", stat.S_IFCHR | 0o600, 0)  # a whiteout
    (upper / "d" / "new").write_text("z")
    deep = upper
    for _ in range(MAX_DEPTH + 2):
        deep = deep / "n"
    deep.mkdir(parents=True)
    assert write_back(upper, lower) == [
        "/".join(["n"] * (MAX_DEPTH + 1)) + f": deeper than {MAX_DEPTH} directories, "
        "not written back"]
    assert sorted(os.listdir(lower / "d")) == ["new", "stays"]


def test_a_full_tmpfs_stops_the_write_not_the_write_back(overlay) -> None:
    ws, scratch_dir = overlay
    (ws / "kept").write_text("k\n")
    assert scratch.overlay_workspace(ws, scratch_dir) is None
    with pytest.raises(OSError, match="No space left"), open(ws / "fill", "wb") as f:
        while True:
            f.write(b"\1" * MiB)
    scratch.unmount(ws)
    assert (ws / "kept").read_text() == "k\n"
    assert 0 < (ws / "fill").stat().st_size <= 8 * MiB


def test_a_dead_sessions_overlay_is_written_back_by_cleanup(overlay) -> None:
    ws, scratch_dir = overlay
    assert scratch.overlay_workspace(ws, scratch_dir) is None
    (ws / "made").write_text("by the agent\n")
    # bastion died: only the record in the session directory is left to go by
    scratch.release_leftover_overlay(scratch_dir.parent)
    assert (ws / "made").read_text() == "by the agent\n"
    assert str(ws) not in Path("/proc/self/mountinfo").read_text()
    assert not (scratch_dir.parent / "workspace-overlay").exists()


def test_a_second_live_session_on_the_same_directory_is_not_stacked(overlay,
                                                                    tmp_path: Path) -> None:
    ws, scratch_dir = overlay
    assert scratch.overlay_workspace(ws, scratch_dir) is None
    other = tmp_path / "other"
    other.mkdir()
    why = scratch.overlay_workspace(ws, other)
    assert why is not None and "another live session" in why
    assert subprocess.run(["findmnt", "-n", "-o", "FSTYPE", str(ws)], capture_output=True,
                          text=True, check=False).stdout.split() == ["overlay"]


def test_the_file_sensor_sees_writes_in_an_overlaid_workspace(monitored, sensors,
                                                              host_ws: Path) -> None:
    """Real-time file events come from the overlay the agent writes through (fanotify
    marks it by file handle where the kernel can, else inotify)."""
    from bastion.events import EventKind

    from .monitor import events_of, wait_for

    s = monitored({"sandbox": {"workspace": str(host_ws)}})
    # the directory first, then the file once the sensor follows it (a file already there
    # when the watch is added is reported with the mkdir's exited pid: latest_call), by
    # a writer still alive when its cgroup is read
    s.exec("mkdir -p .config/systemd/user && sleep 0.5 && echo '[Service]' > "
           ".config/systemd/user/x.service && sleep 0.5", call_id="c7", step=7)
    found = wait_for(lambda: [e for e in events_of(s, EventKind.FILE_WRITE)
                              if e.fields["file.path"].endswith("x.service")])
    assert found[0].fields["file.class"] == "systemd" and found[0].call_id == "c7"
    release = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    if sensors.files.attributes_writers and release >= (6, 5):  # AT_HANDLE_FID
        assert found[0].fields["file.attribution"] == "writer"
