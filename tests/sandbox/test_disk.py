"""Disk and inode limits: every writable place of a session sits on one size-limited
filesystem. Each test fills it from inside a real session and checks the host side."""

from __future__ import annotations

import os
from pathlib import Path

from bastion import Outcome
from bastion.sandbox import scratch

MiB = 1024 * 1024


def _host_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _disk_verdicts(result):
    return [v for v in result.verdicts if v.rule_id == "resource.disk_limit"]


def test_fallocate_past_the_limit_is_refused_and_costs_the_host_nothing(
        make_session, state_dir: Path) -> None:
    s = make_session({"sandbox": {"limits": {"disk": "64MiB"}}})
    before = _host_free(state_dir)
    r = s.exec("fallocate -l 3G /workspace/big")
    assert r.exit_code != 0 and "No space left on device" in r.stderr
    # writing it byte by byte instead stops at the limit, and that is a verdict
    r = s.exec("head -c 3G /dev/zero > /workspace/big")
    after = _host_free(state_dir)
    assert r.exit_code != 0 and "No space left on device" in r.stderr
    assert (s.workspace / "big").stat().st_size <= 64 * MiB
    # the host's disk gave nothing to the session (other tests write meanwhile: allow
    # them a margin well under the 3 GB the attack asked for)
    assert before - after < 512 * MiB
    verdicts = _disk_verdicts(r)
    assert verdicts and "disk limit" in verdicts[0].message
    assert verdicts[0].call_id == r.call_id


def test_every_writable_place_shares_the_limit(make_session) -> None:
    s = make_session({"sandbox": {"limits": {"disk": "32MiB"}}})
    for place in ("/tmp", "/var/tmp", "/dev/shm", "/workspace"):
        r = s.exec(f"head -c 40M /dev/zero > {place}/fill")
        assert r.exit_code != 0 and "No space left on device" in r.stderr, place
        assert s.exec(f"rm {place}/fill").exit_code == 0
    # two places together cannot exceed it either
    s.exec("head -c 20M /dev/zero > /tmp/a")
    r = s.exec("head -c 20M /dev/zero > /workspace/b")
    assert "No space left on device" in r.stderr
    used, total, _, _ = scratch.usage(s.workspace)
    assert total <= 32 * MiB + 4096 and used <= total


def test_inode_limit(make_session) -> None:
    s = make_session({"sandbox": {"limits": {"inodes": 500}}})
    r = s.exec("for i in $(seq 1000); do : > /tmp/f$i || exit 1; done")
    assert r.exit_code != 0 and "No space left on device" in r.stderr
    verdicts = _disk_verdicts(r)
    assert verdicts and "inode limit" in verdicts[0].message
    # deleting makes room again, and the next fill is reported again
    assert s.exec("rm -f /tmp/f*; : > /tmp/ok && echo ok").stdout == "ok\n"


def test_filling_tmp_under_a_small_memory_limit_is_enospc_not_oom(make_session) -> None:
    """The files a session keeps are memory (tmpfs, charged to its calls): the cap
    leaves half of the memory limit to the programs, so the agent is told "disk full"
    and can still clean up, instead of an OOM that kills whatever tries to."""
    s = make_session({"sandbox": {"limits": {"memory": "512MiB", "disk": "4GiB"}}})
    r = s.exec("head -c 1G /dev/zero > /tmp/fill; echo status $?", timeout=60)
    assert r.outcome is Outcome.OK and "No space left on device" in r.stderr
    assert "status 1" in r.stdout
    assert _disk_verdicts(r)
    assert s.sandbox.cgroup.supervisor_oom_kills() == 0
    assert s.exec("rm /tmp/fill; echo ok").stdout == "ok\n"
    assert s.ended is None


def test_mounts_are_removed_with_the_session(make_session, state_dir: Path) -> None:
    s = make_session()
    s.exec("echo x > /workspace/x; echo y > /tmp/y")
    assert scratch.mounts_below(state_dir)
    s.close()
    assert scratch.mounts_below(state_dir) == []


def test_a_prepared_workspace_moves_onto_the_limited_filesystem(make_session) -> None:
    def prepare(workspace: Path, uid: int) -> None:
        (workspace / "src").mkdir()
        (workspace / "src" / "main.py").write_text("print('task')\n")
        (workspace / "link").symlink_to("src/main.py")
        for path in (workspace / "src", workspace / "src" / "main.py"):
            os.chown(path, uid, uid)

    s = make_session(prepare=prepare)
    r = s.exec("python3 link; touch src/new && ls -l src/main.py | cut -d' ' -f1")
    assert r.stdout.startswith("task\n"), r.stderr
    used, total, _, _ = scratch.usage(s.workspace)
    assert used > 0 and total <= 1024**3


def test_a_prepared_workspace_larger_than_the_limit_is_refused(make_session) -> None:
    import pytest

    from bastion import SandboxUnavailable

    def prepare(workspace: Path, uid: int) -> None:
        (workspace / "big").write_bytes(b"\0" * (8 * MiB))

    with pytest.raises(SandboxUnavailable, match="disk limits.*No space left"):
        make_session({"sandbox": {"limits": {"disk": "4MiB"}}}, prepare=prepare)


def test_a_configured_workspace_is_limited_too(make_session, tmp_path: Path) -> None:
    import tempfile

    ws = Path(tempfile.mkdtemp(prefix="bastion-ws-", dir="/var/tmp"))
    try:
        s = make_session({"sandbox": {"workspace": str(ws)}})
        created = [e for e in s.events if e.fields.get("life.state") == "created"]
        assert "disk" not in created[0].fields["unenforced"]  # an overlay (scratch.py)
        for place in ("/tmp", "/workspace"):
            r = s.exec(f"head -c 2G /dev/zero > {place}/fill")
            assert "No space left on device" in r.stderr, place
    finally:
        import shutil

        shutil.rmtree(ws, ignore_errors=True)
