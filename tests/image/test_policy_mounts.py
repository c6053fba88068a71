"""`sandbox.mounts`: extra host directories, read-only unless rw; masks win."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion import Policy
from bastion.errors import PolicyError, SandboxUnavailable


@pytest.fixture
def data_dirs() -> Iterator[tuple[Path, Path]]:
    base = Path(tempfile.mkdtemp(prefix="bastion-mounts-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    ro, rw = base / "dataset", base / "cache"
    ro.mkdir()
    rw.mkdir()
    (ro / "train.jsonl").write_text('{"x": 1}\n')
    os.chmod(rw, 0o777)
    yield ro, rw
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def test_ro_and_rw_mounts(make_session, data_dirs: tuple[Path, Path]) -> None:  # type: ignore[no-untyped-def]
    ro, rw = data_dirs
    s = make_session({"sandbox": {"mounts": [
        {"source": str(ro), "target": "/data"},
        {"source": str(rw), "target": "/cache", "mode": "rw"},
    ]}})
    r = s.exec("cat /data/train.jsonl; echo x > /data/new; echo y > /cache/item && echo wrote")
    assert '{"x": 1}' in r.stdout and "wrote" in r.stdout
    assert "Read-only file system" in r.stderr
    assert not (ro / "new").exists()
    assert (rw / "item").read_text() == "y\n"


def test_masks_and_protected_paths_win(make_session, data_dirs: tuple[Path, Path]) -> None:  # type: ignore[no-untyped-def]
    _, rw = data_dirs
    # rule packs off: this is about the sandbox's own enforcement (the reward-integrity
    # rules would refuse the command before it ran)
    s = make_session({"rules": {"packs": []}, "sandbox": {"protected": ["/cache"], "mounts": [
        {"source": str(rw), "target": "/cache", "mode": "rw"}]}})
    r = s.exec("python3 -c \"open('/cache/item', 'w').write('y')\"")
    assert r.exit_code != 0 and not (rw / "item").exists()


def test_state_directory_cannot_be_mounted(make_session, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SandboxUnavailable, match="state directory"):
        make_session({"sandbox": {"mounts": [{"source": str(state_dir / "audit"),
                                              "target": "/data"}]}})


@pytest.mark.parametrize("mount, message", [
    ({"source": "data", "target": "/data"}, "absolute"),
    ({"source": "/srv", "target": "/proc/x"}, "bastion builds"),
    ({"source": "/srv", "target": "/"}, "cannot be /"),
    ({"source": "/srv", "target": "/a/../etc"}, "normalised"),
    ({"source": "/srv", "target": "/d", "mode": "rwx"}, "'ro' or 'rw'"),
])
def test_invalid_mounts_are_policy_errors(mount: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_dict({"sandbox": {"mounts": [mount]}})


def test_protected_path_inside_rw_mount(make_session, data_dirs: tuple[Path, Path]) -> None:  # type: ignore[no-untyped-def]
    _, rw = data_dirs
    (rw / "grader").mkdir()
    (rw / "grader" / "score.txt").write_text("0\n")
    os.chmod(rw / "grader", 0o777)
    s = make_session({"rules": {"packs": []},
                      "sandbox": {"protected": ["/cache/grader"], "mounts": [
        {"source": str(rw), "target": "/cache", "mode": "rw"}]}})
    r = s.exec("python3 -c \"open('/cache/grader/score.txt', 'w').write('1')\"; "
               "echo ok > /cache/free && cat /cache/free")
    assert "Read-only file system" in r.stderr and r.stdout == "ok\n"
    assert (rw / "grader" / "score.txt").read_text() == "0\n"
