"""The `bastion` command, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BASTION = [sys.executable, "-m", "bastion"]


def run(args: list[str], state_dir: Path, **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BASTION_STATE_DIR": str(state_dir), **kw.pop("env", {})}
    return subprocess.run([*BASTION, *args], capture_output=True, text=True, env=env,
                          timeout=60, **kw)


def test_run_prints_output_and_exit_code(state_dir: Path) -> None:
    r = run(["run", "--", "sh", "-c", "echo hello; exit 4"], state_dir)
    assert r.stdout == "hello\n" and r.returncode == 4


def test_run_json_schema(state_dir: Path) -> None:
    r = run(["run", "--json", "--", "echo hi"], state_dir)
    doc = json.loads(r.stdout)
    assert doc["schema"] == 1
    for key in ("call_id", "step", "outcome", "exit_code", "signal", "timed_out", "duration",
                "stdout", "stderr", "truncated", "reason", "verdicts", "session_id", "policy",
                "policy_hash"):
        assert key in doc, key
    assert doc["stdout"] == "hi\n" and doc["outcome"] == "ok" and doc["verdicts"] == []


def test_bad_policy_is_one_line_and_exit_2(state_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nsandbox:\n  limits: {pids: -3}\n")
    r = run(["run", "--policy", str(bad), "--", "true"], state_dir)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{bad}:3" in lines[0] and "sandbox.limits.pids" in lines[0]


def test_missing_bubblewrap_is_actionable(state_dir: Path) -> None:
    r = run(["run", "--", "true"], state_dir, env={"PATH": "/nonexistent"})
    assert r.returncode == 2
    assert "bubblewrap is not installed" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_not_root_is_actionable(state_dir: Path) -> None:
    r = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
         *BASTION, "run", "--", "true"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "BASTION_STATE_DIR": str(state_dir)},
    )
    assert r.returncode == 2 and "must run as root" in r.stderr


def test_help_lists_commands(state_dir: Path) -> None:
    r = run(["--help"], state_dir)
    assert r.returncode == 0 and "run" in r.stdout and "shell" in r.stdout


def test_shell_runs_each_line_as_a_call(state_dir: Path) -> None:
    r = run(["shell"], state_dir, input="echo one\ncat /proc/1/comm\n")
    assert "one" in r.stdout and "bwrap" in r.stdout and r.returncode == 0


def test_cleanup_removes_sessions_of_dead_processes(state_dir: Path) -> None:
    # a bastion process that dies without closing its session (SIGKILL)
    code = ("import os, sys\nfrom bastion import Session\n"
            f"s = Session(state_dir={str(state_dir)!r})\n"
            "s.exec('sleep 300 &')\nprint(s.session_id, flush=True)\n"
            "os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    sid = proc.stdout.strip()
    assert sid.startswith("s-")
    # bwrap's --die-with-parent already killed the sandbox; its cgroup and dir remain
    assert (state_dir / "sessions" / sid).exists()
    r = run(["cleanup", "--dry-run"], state_dir)
    assert sid in r.stdout and "would remove" in r.stdout
    r = run(["cleanup"], state_dir)
    assert r.returncode == 0 and f"removing {sid}" in r.stdout
    assert not (state_dir / "sessions" / sid).exists()
    from bastion.sandbox import CgroupHost
    from bastion.sandbox.cleanup import cgroup_prefix

    assert not (CgroupHost.detect(cgroup_prefix(state_dir)).unified / sid).exists()
    from bastion.sandbox.scratch import mounts_below

    assert mounts_below(state_dir) == []  # its size-limited filesystems are gone too


def test_cleanup_of_one_state_dir_never_touches_another(make_session, tmp_path: Path) -> None:
    """Two operators, two state directories, sessions live in both, and a dead session
    in each: cleanup of one lists and removes only its own dead session."""
    import shutil
    import tempfile

    dirs = [Path(tempfile.mkdtemp(prefix="bastion-test-", dir="/var/tmp")) for _ in range(2)]
    try:
        dead = {}
        for d in dirs:
            os.chmod(d, 0o711)
            code = ("import os\nfrom bastion import Session\n"
                    f"s = Session(state_dir={str(d)!r})\n"
                    "print(s.session_id, flush=True)\nos.kill(os.getpid(), 9)\n")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                 text=True, timeout=60).stdout.strip()
            assert out.startswith("s-")
            dead[d] = out
        live = {d: make_session(state_dir=d) for d in dirs}
        for d in dirs:
            other = dirs[1] if d == dirs[0] else dirs[0]
            r = run(["cleanup", "--dry-run"], d)
            assert r.returncode == 0, r.stderr
            assert dead[d] in r.stdout and "1 leftover session(s)" in r.stdout, r.stdout
            assert live[d].session_id not in r.stdout
            assert live[other].session_id not in r.stdout and dead[other] not in r.stdout
        r = run(["cleanup"], dirs[0])
        assert f"removing {dead[dirs[0]]}" in r.stdout and dead[dirs[1]] not in r.stdout
        for s in live.values():
            assert s.exec("echo alive").stdout == "alive\n"
        assert (dirs[1] / "sessions" / dead[dirs[1]]).exists()
        for s in live.values():
            s.close()
        assert run(["cleanup"], dirs[1]).returncode == 0
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def test_cleanup_leaves_live_sessions_alone(make_session, state_dir: Path) -> None:
    s = make_session()
    r = run(["cleanup"], state_dir)
    assert s.session_id not in r.stdout
    assert s.exec("echo alive").stdout == "alive\n"


def test_run_refuses_a_zero_or_negative_timeout(state_dir: Path) -> None:
    for bad in ("0", "-1"):
        r = run(["run", "--timeout", bad, "--", "echo", "hi"], state_dir)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert "--timeout must be a positive number of seconds" in r.stderr
        assert "hi" not in r.stdout
    r = run(["run", "--timeout", "5", "--", "echo", "hi"], state_dir)
    assert r.returncode == 0 and r.stdout == "hi\n"


def test_run_takes_a_command_that_is_not_utf8(state_dir: Path) -> None:
    env = {**os.environ, "BASTION_STATE_DIR": str(state_dir)}
    r = subprocess.run([*BASTION, "run", "--", b"printf '%s' \xff\xfe | od -An -tx1"],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [b"ff", b"fe"]
