"""The exec listener fails closed (``sandbox/execnotify.py``).

Every exec of every session waits for the host's notifier thread, so a notifier that
stalls would hang them all, and a supervisor that delivers no listener would leave the
session's short-lived execs unjudged. Each case runs in its own Python process: it
breaks the process-wide notifier on purpose."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bastion.sandbox.execnotify import available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

_ROOT = Path(__file__).resolve().parents[2]


def _run(state_dir: Path, body: str) -> str:
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from bastion import Session
        from bastion.errors import SandboxUnavailable, SessionBroken
        from bastion.sandbox import execnotify
        state = Path(sys.argv[1])
    """) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script, str(state_dir)], cwd=_ROOT, check=False,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_stalled_notifier_ends_every_session_and_the_next_gets_a_fresh_one(state_dir):
    out = _run(state_dir, """
        s = Session(state_dir=state)
        assert s.exec("/bin/true").ok
        execnotify.STUCK_AFTER = 2.0  # from now on (a loaded host may be slow before)
        stalled = execnotify.notifier()
        with stalled._lock:  # the next exec's record cannot be stored: it waits
            try:
                s.exec("/bin/true", timeout=60)
            except SessionBroken:
                pass
            deadline = time.monotonic() + 60
            while s.ended is None and time.monotonic() < deadline:
                time.sleep(0.05)
        print("ended", s.ended is not None)
        print("reason", "exec notifier" in (s.sandbox.lost or ""))
        print("broken", stalled.broken is not None)
        s.close()
        t = Session(state_dir=state)  # a new session is served by a new notifier
        print("fresh", t.exec("/bin/echo ok").stdout.strip(), execnotify.notifier() is not stalled)
        t.close()
    """)
    assert out.splitlines() == ["ended True", "reason True", "broken True", "fresh ok True"]


def test_a_supervisor_without_a_listener_is_refused(state_dir):
    out = _run(state_dir, """
        from bastion.sandbox import sandbox as sandbox_module
        # a filter the kernel refuses (EINVAL): the supervisor reports it cannot
        # install the listener, and the session must not start without it
        sandbox_module.notify_filter = lambda: bytes(8)
        try:
            Session(state_dir=state)
        except SandboxUnavailable as exc:
            print("refused", "exec listener" in str(exc))
        else:
            print("started")
    """)
    assert out.strip() == "refused True"


def test_records_stay_for_every_reader_and_a_reused_pid_does_not_get_an_older_argv():
    """Several process sensors (one per host in a process) read the same exec table at
    their own pace. A sensor that saw a process exit used to drop its records, and a
    sensor still behind then found no argv for that process's exec (seen as a flaky
    `bash -c "sh -c ..."` test under load). Lookups are bounded by the process's own
    fork time instead; nothing is taken away by a reader."""
    from bastion.sandbox.execnotify import ExecNotifier, ExecRecord

    table = ExecNotifier()
    first = ExecRecord(tgid=4242, recv_ns=100, filename="/bin/sh", argv=("sh", "-c", "x"),
                       truncated=False)
    table._record(first)
    # the fast reader has handled the exec and the exit; the slow one looks it up now
    assert table.lookup(4242, before_ns=150, after_ns=50) == (first, False)
    assert table.lookup(4242, before_ns=150, after_ns=50) == (first, False)  # still there
    # pid 4242 is reused: forked at 300, exec'd at 400 without a record of its own
    reused, later = table.lookup(4242, before_ns=400, after_ns=300)
    assert reused is None and later is False
    second = ExecRecord(tgid=4242, recv_ns=350, filename="/bin/ls", argv=("ls",),
                        truncated=False)
    table._record(second)
    assert table.lookup(4242, before_ns=400, after_ns=300) == (second, False)
    # the slow reader, still on the first process, is told a later exec exists
    assert table.lookup(4242, before_ns=150, after_ns=50) == (first, True)
