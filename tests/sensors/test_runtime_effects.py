"""Run-time effects that pre-exec analysis cannot see (issue 10, held-out 4): the pieces
on their own, against real files and real processes. The same acts tried in real
sessions are in tests/rules/test_runtime_effects_e2e.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.analysis.ssh import SshExecDetector
from bastion.events import Event, EventKind
from bastion.sensors.files import setid_files
from bastion.sensors.pyshadow import import_dirs, shadowed_modules

# -- setuid/setgid sweep ----------------------------------------------------------------


def test_setid_files_finds_setuid_and_setgid_executables_at_any_depth(tmp_path: Path) -> None:
    deep = tmp_path / ".cache" / "x" / "y"
    deep.mkdir(parents=True)
    (deep / "tool").write_bytes(b"\x7fELF")
    (deep / "tool").chmod(0o4755)
    (tmp_path / "gs").write_text("#!/bin/sh\n")
    (tmp_path / "gs").chmod(0o2755)
    # not programs: a setgid directory, a setgid file without an execute bit (a
    # mandatory-locking mark), ordinary executables, a symlink to a setuid file
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared").chmod(0o2775)
    (tmp_path / "lock").write_text("")
    (tmp_path / "lock").chmod(0o2644)
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "link").symlink_to(deep / "tool")
    found = setid_files(tmp_path)
    assert sorted(found) == [".cache/x/y/tool", "gs"]
    assert found[".cache/x/y/tool"][1] & 0o7777 == 0o4755


def test_setid_files_stops_at_its_budget(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i}").write_text("")
    (tmp_path / "zz").write_text("")
    (tmp_path / "zz").chmod(0o4755)
    assert len(setid_files(tmp_path, budget=3)) <= 1  # at most 2 entries looked at
    assert list(setid_files(tmp_path)) == ["zz"]


# -- test framework shadowed at exec ----------------------------------------------------


def test_import_dirs_follow_pythons_own_rules() -> None:
    env = {"PYTHONPATH": "/workspace/.cache/site:rel"}
    assert import_dirs(["python3", "-m", "pytest"], env, "/workspace") == [
        "/workspace", "/workspace/.cache/site", "/workspace/rel"]
    assert import_dirs(["python3", "tools/run.py", "x"], env, "/workspace") == [
        "/workspace/tools", "/workspace/.cache/site", "/workspace/rel"]
    assert import_dirs(["python3", "-I", "-m", "pytest"], env, "/workspace") == []
    assert import_dirs(["python3", "-E", "-m", "pytest"], env, "/workspace") == ["/workspace"]
    assert import_dirs(["python3", "-P", "-m", "pytest"], {}, "/workspace") == []


def _python_waiting(env_path: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": env_path}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env,
                            cwd=cwd)
    time.sleep(0.2)
    return proc


@pytest.mark.parametrize("layout,expected", [
    ({"pytest/__init__.py": "", "pytest/__main__.py": "print('1 passed')\n"}, ["pytest"]),
    ({"_pytest/__init__.py": ""}, ["_pytest"]),
    ({"unittest/__init__.py": ""}, ["unittest"]),
    # pip install --target deps pytest: the real thing, with its metadata
    ({"pytest/__init__.py": "", "pytest-8.3.2.dist-info/METADATA": "Name: pytest\n"}, []),
    # a namespace directory named pytest (no __init__) loses to the installed package
    ({"pytest/notes.txt": ""}, []),
    ({"helpers.py": "x = 1\n"}, []),
])
def test_shadowed_modules_of_a_real_python_process(tmp_path: Path, layout: dict[str, str],
                                                   expected: list[str]) -> None:
    site = tmp_path / "site"
    for rel, text in layout.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    work = tmp_path / "work"
    work.mkdir()
    proc = _python_waiting(str(site), work)
    try:
        found = shadowed_modules(proc.pid, "python3", sys.executable,
                                 [sys.executable, "-m", "pytest"], str(work))
    finally:
        proc.kill()
        proc.wait()
    assert found == [f"{m}@{site}" for m in expected]


def test_site_packages_and_non_python_programs_are_not_judged(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    (site / "pytest").mkdir(parents=True)
    (site / "pytest" / "__init__.py").write_text("")
    proc = _python_waiting(str(site), tmp_path)
    try:
        assert shadowed_modules(proc.pid, "python3", sys.executable,
                                [sys.executable, "-m", "pytest"], str(tmp_path)) == []
        assert shadowed_modules(proc.pid, "bash", "/usr/bin/bash", ["bash"], str(tmp_path)) == []
    finally:
        proc.kill()
        proc.wait()


# -- an ssh client's config changed after it was judged ---------------------------------


def _event(kind: EventKind, pid: int | None, **fields: object) -> Event:
    return Event(kind=kind, session_id="s1", run_id="r", episode_id="e", step=1,
                 call_id="c1", pid=pid, fields=fields)


@pytest.mark.skipif(not os.path.exists("/usr/bin/ssh"), reason="no ssh client")
@pytest.mark.parametrize("late,expected", [
    ("RemoteForward 9204 localhost:22\n", ["ssh_forward_remote"]),
    ("ServerAliveInterval 30\n", []),  # an honest change adds no forwarding
])
def test_an_include_written_after_ssh_started_is_judged_when_its_call_ends(
        tmp_path: Path, late: str, expected: list[str]) -> None:
    """A real ssh client (its ProxyCommand a `sleep`, so no packet leaves) whose
    config Includes a file that does not exist when it is judged; the file is written
    afterwards; the call's end reads the configs again."""
    cfg = tmp_path / "c2"
    included = tmp_path / ".late"
    cfg.write_text(f"Host r\n HostName relay.invalid\n ProxyCommand sleep 30\n"
                   f" BatchMode yes\n Include {included}\n")
    args = ["ssh", "-F", str(cfg), "r", "true"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp_path)
    detector = SshExecDetector()
    try:
        time.sleep(0.2)
        first = detector.observe(_event(EventKind.EXEC, proc.pid, **{
            "proc.args": args, "proc.name": "ssh", "proc.exe": "/usr/bin/ssh",
            "proc.cwd": str(tmp_path)}))
        assert all("ssh_forward_remote" not in f.evidence.get("features", []) for f in first)
        included.write_text(late)
        end = detector.observe(_event(EventKind.LIFECYCLE, None, **{"life.state": "call_end"}))
        assert [f.evidence["features"] for f in end] == ([expected] if expected else [])
        if expected:
            assert end[0].rule_id == "tunnels.ssh_config_changed_after_start"
            # reported once: the next call's end finds nothing new
            again = detector.observe(_event(EventKind.LIFECYCLE, None,
                                            **{"life.state": "call_end"}))
            assert again == []
    finally:
        proc.kill()
        proc.wait()
    detector.forget("s1")
    gone = detector.observe(_event(EventKind.LIFECYCLE, None, **{"life.state": "call_end"}))
    assert gone == []


def test_the_sweep_reports_new_and_changed_setid_files_once(tmp_path: Path) -> None:
    from bastion.sensors.files import SetidSweep

    (tmp_path / "old").write_text("")
    (tmp_path / "old").chmod(0o4755)  # there before the session: the baseline
    sweep = SetidSweep(tmp_path)
    assert sweep.look() == []
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "new").write_text("")
    (tmp_path / "a" / "b" / "new").chmod(0o4755)
    assert sweep.look() == [("a/b/new", 0o104755, "create")]
    assert sweep.look() == []
    # a file replaced by a setgid one under the same name (a new inode: a changed dir)
    (tmp_path / "a" / "b" / "new").unlink()
    (tmp_path / "a" / "b" / "new").write_text("")
    (tmp_path / "a" / "b" / "new").chmod(0o2755)
    assert [(r, op) for r, _m, op in sweep.look()] == [("a/b/new", "chmod")]


def test_a_sweep_over_budget_goes_on_where_it_stopped(tmp_path: Path) -> None:
    from bastion.sensors.files import SetidSweep

    for i in range(30):
        (tmp_path / f"d{i:02}").mkdir()
    sweep = SetidSweep(tmp_path, budget=10)
    assert sweep.look() == []  # the first look learns everything
    for i in range(30):
        (tmp_path / f"d{i:02}" / "x").write_text("")
        (tmp_path / f"d{i:02}" / "x").chmod(0o4755)
    # root changed? no: only subdirectories did; each look covers part of them
    seen: list[str] = []
    for _ in range(8):
        seen += [r for r, _m, _op in sweep.look()]
    assert sorted(seen) == [f"d{i:02}/x" for i in range(30)]
