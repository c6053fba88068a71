"""Session behaviour: the choke point, persistence between calls, control, results."""

from __future__ import annotations

import contextlib
import json

import pytest

from bastion import Outcome, Session, SessionBroken
from tests.conftest import wait_for

pytestmark = pytest.mark.needs_root


def test_exec_result_fields(session: Session) -> None:
    r = session.exec("echo out; echo err >&2; exit 3", step=4, call_id="c-four")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 3)
    assert r.outcome is Outcome.EXIT_NONZERO and not r.timed_out
    assert r.call_id == "c-four" and r.step == 4 and r.duration > 0
    assert r.verdicts == []
    d = r.to_dict()
    assert d["schema"] == 1 and d["outcome"] == "exit_nonzero" and json.dumps(d)


def test_stdin_env_cwd_and_argv(session: Session) -> None:
    assert session.exec("tr a-z A-Z", stdin="hello").stdout == "HELLO"
    assert session.exec("echo $FOO", env={"FOO": "bar"}).stdout == "bar\n"
    session.exec("mkdir -p sub")
    assert session.exec("pwd", cwd="/workspace/sub").stdout == "/workspace/sub\n"
    assert session.exec(["printf", "%s|", "a b", "c"]).stdout == "a b|c|"
    big = "x" * 300_000
    assert len(session.exec("cat", stdin=big).stdout) == 300_000


def test_files_persist_between_calls(session: Session) -> None:
    session.write_file("notes.txt", "remember me")
    assert session.read_file("notes.txt").stdout == "remember me"
    assert session.exec("cat /workspace/notes.txt").stdout == "remember me"
    assert (session.workspace / "notes.txt").read_text() == "remember me"


def test_background_process_charged_to_its_call(session: Session) -> None:
    session.exec("true", step=1, call_id="c1")
    session.exec("sleep 60 &", step=3, call_id="c3")
    session.exec("true", step=9, call_id="c9")

    def sleepers() -> list[int]:
        # the background child may still be a forked shell, not yet sleep, on a slow host
        found = []
        for p in session.sandbox.cgroup.pids():
            with contextlib.suppress(OSError), open(f"/proc/{p}/comm") as f:
                if f.read().strip() == "sleep":
                    found.append(p)
        return found

    pids = wait_for(sleepers)
    assert len(pids) == 1
    with open(f"/proc/{pids[0]}/cgroup") as f:
        cgroup = f.read().splitlines()
    unified = next(line.split(":", 2)[2] for line in cgroup if line.startswith("0::"))
    call = session.view.call_for_cgroup(unified)
    assert call is not None and call.call_id == "c3" and call.step == 3


def test_steps_and_call_ids_default_and_must_be_unique(session: Session) -> None:
    assert session.exec("true").call_id == "c0"
    assert session.exec("true").call_id == "c1"
    with pytest.raises(ValueError):
        session.exec("true", call_id="c1")


def test_freeze_and_thaw(session: Session) -> None:
    ticks = session.workspace / "ticks"
    session.exec("(while true; do echo x >> ticks; sleep 0.02; done) &")
    assert wait_for(lambda: ticks.exists() and ticks.stat().st_size > 0)
    session.freeze()
    assert session.sandbox.cgroup.frozen()
    size = ticks.stat().st_size
    # frozen: the file must not grow over a period the loop would write ~15 times in
    assert not wait_for(lambda: ticks.stat().st_size != size, timeout=0.3)
    session.thaw()
    assert wait_for(lambda: ticks.stat().st_size > size)


def test_kill_ends_the_session(session: Session) -> None:
    session.exec("sleep 100 &")
    session.kill()
    assert session.ended
    with pytest.raises(SessionBroken):
        session.exec("true")
    assert session.sandbox.cgroup.wait_empty(timeout=30)


def test_kill_call_kills_only_that_calls_processes(session: Session) -> None:
    session.exec("sleep 100 &", call_id="a")
    session.exec("sleep 200 &", call_id="b")
    assert session.kill_call("a")
    procs = session._calls["a"].cgroup / "cgroup.procs"
    assert wait_for(lambda: not procs.read_text().split())
    out = session.exec("pgrep -a sleep").stdout
    assert "sleep 200" in out and "sleep 100" not in out


def test_supervisor_killed_breaks_session_cleanly(session: Session) -> None:
    # the agent can kill bastion's in-sandbox helper; then the session is unusable,
    # not silently unobserved
    with pytest.raises(SessionBroken):
        session.exec("sleep 100 & kill -9 2")
    assert session.ended
    with pytest.raises(SessionBroken):
        session.exec("true")
    # fail closed: what the agent left running was killed with the supervisor
    assert session.sandbox.cgroup.wait_empty(timeout=30)


def test_lifecycle_and_command_events_are_attributed(session: Session) -> None:
    session.exec("echo hi", step=2, call_id="c2")
    kinds = [(e.kind.value, e.get("life.state"), e.call_id) for e in session.events]
    assert ("lifecycle", "created", None) in kinds
    assert ("lifecycle", "call_start", "c2") in kinds
    assert ("command", None, "c2") in kinds
    cmd = next(e for e in session.events if e.kind.value == "command")
    assert cmd.get("cmd.raw") == "echo hi" and cmd.step == 2
    assert cmd.session_id == session.session_id and cmd.run_id == session.run_id


def test_session_ids(make_session) -> None:
    s = make_session(run_id="run-1", episode_id="ep-7")
    assert s.run_id == "run-1" and s.episode_id == "ep-7" and s.session_id.startswith("s-")


def test_session_outlives_the_thread_that_created_it(make_session) -> None:
    # bwrap's --die-with-parent follows the forking *thread*; sandboxes must not die
    # when a short-lived worker thread that created them exits
    import threading

    box: list[Session] = []
    t = threading.Thread(target=lambda: box.append(make_session()))
    t.start()
    t.join()
    # the parent-death signal would land within moments of the thread's exit
    assert not wait_for(lambda: not box[0].sandbox.alive, timeout=0.3)
    assert box[0].exec("echo alive").stdout == "alive\n"


def test_write_file_target_is_visible_to_analysis(session: Session) -> None:
    session.exec("mkdir -p 'dir name'")
    r = session.write_file("dir name/it's.txt", "content")
    assert r.exit_code == 0
    assert (session.workspace / "dir name" / "it's.txt").read_text() == "content"
    cmd = [e for e in session.events if e.kind.value == "command"][-1]
    assert "dir name/it's.txt" in cmd.get("cmd.text")


def test_works_when_the_host_process_holds_many_fds(make_session) -> None:
    # a trainer with many sessions has fd numbers above 1024; the in-sandbox
    # supervisor inherits its socket's number and must not use select()
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        s = make_session()
        assert s.exec("echo ok").stdout == "ok\n"
    finally:
        for fd in held:
            os.close(fd)


def test_write_file_creates_missing_parent_directories(session: Session) -> None:
    """As agents' edit tools do: writing deploy/app/app.service into an empty
    workspace creates deploy/app, and the write is still one judged call."""
    r = session.write_file("/workspace/deploy/app/app.service", "[Unit]\n", step=0)
    assert r.ok, r
    assert session.exec("cat deploy/app/app.service", step=1).stdout == "[Unit]\n"
    assert session.write_file("top.txt", "x", step=2).ok  # relative, no parent to make
    # a parent the agent may not create is still refused by the sandbox, not by us
    r = session.write_file("/usr/lib/bastion-test/x.txt", "x", step=3)
    assert not r.ok and "denied" not in r.outcome.value
