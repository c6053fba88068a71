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

    assert not (CgroupHost.detect().unified / sid).exists()


def test_cleanup_leaves_live_sessions_alone(make_session, state_dir: Path) -> None:
    s = make_session()
    r = run(["cleanup"], state_dir)
    assert s.session_id not in r.stdout
    assert s.exec("echo alive").stdout == "alive\n"
