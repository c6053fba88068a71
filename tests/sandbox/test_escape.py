"""Escape tests: each tries an attack from inside a real session and asserts it failed.

The sandbox's job is to make these impossible, so every test runs the attack the way an
agent would (a shell command through Session.exec) and then checks the host side too.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from pathlib import Path

import pytest

from bastion import Outcome, Session
from tests.conftest import pid_alive


def test_cannot_write_outside_workspace(session: Session) -> None:
    marker = f"escape-probe-{secrets.token_hex(4)}"
    for target in (f"/etc/{marker}", f"/usr/{marker}", f"/work/{marker}", f"/var/{marker}",
                   f"/{marker}"):
        r = session.exec(f"echo pwned > {target}")
        assert r.exit_code != 0, target
        # read-only, or (outside the allow list of host trees) not there at all
        assert ("Read-only file system" in r.stderr or "Permission denied" in r.stderr
                or "No such file or directory" in r.stderr)
        assert not os.path.exists(target)
    ok = session.exec("echo fine > /workspace/ok && cat /workspace/ok")
    assert ok.stdout == "fine\n"


def test_cannot_read_hidden_paths(make_session, tmp_path: Path) -> None:
    secret_dir = Path("/opt") / f"bastion-secret-{secrets.token_hex(4)}"
    secret_dir.mkdir()
    try:
        (secret_dir / "key").write_text("TOPSECRET")
        s = make_session({"sandbox": {"hidden": [str(secret_dir), "/root", "/home"]}})
        r = s.exec(f"cat {secret_dir}/key; ls -A {secret_dir}; ls -A /root; ls -A /home")
        assert "TOPSECRET" not in r.stdout
        assert r.stdout.strip() == ""  # every hidden directory looks empty
        # the host's own secrets are not there either
        assert s.exec("cat /etc/shadow").stdout == ""
        assert s.exec("ls -A /etc/ssh").stdout == ""
    finally:
        (secret_dir / "key").unlink()
        secret_dir.rmdir()


def test_cannot_see_state_dir(make_session, state_dir: Path) -> None:
    # put the state dir somewhere the sandbox's root view would otherwise include
    visible_state = Path("/opt") / f"bastion-state-{secrets.token_hex(4)}"
    s = make_session(state_dir=visible_state)
    try:
        (visible_state / "audit" / "probe").write_text("audit data")
        r = s.exec(f"ls -A {visible_state}; cat {visible_state}/audit/probe")
        assert r.stdout.strip() == ""
        w = s.exec(f"touch {visible_state}/x")
        assert w.exit_code != 0
    finally:
        s.close()
        subprocess.run(["rm", "-rf", str(visible_state)], check=True)


def test_cannot_write_protected_paths(make_session, state_dir: Path) -> None:
    ws = state_dir / "ws"
    (ws / "tests").mkdir(parents=True)
    (ws / "tests" / "test_grader.py").write_text("def test_ok():\n    assert solve() == 42\n")
    s = make_session({"sandbox": {"workspace": str(ws), "protected": ["./tests"]}})
    attempts = [
        "echo 'def test_ok(): pass' > tests/test_grader.py",
        "rm -f tests/test_grader.py",
        "mv tests/test_grader.py tests/old.py",
        "touch tests/conftest.py",
        "chmod 777 tests/test_grader.py",
    ]
    for cmd in attempts:
        r = s.exec(cmd)
        assert r.exit_code != 0, cmd
    assert (ws / "tests" / "test_grader.py").read_text().startswith("def test_ok():\n    assert")
    assert not (ws / "tests" / "conftest.py").exists()
    # reading is fine, and the rest of the workspace is writable
    assert "solve()" in s.exec("cat tests/test_grader.py").stdout
    assert s.exec("echo x > solution.py").exit_code == 0


PTRACE_ATTACH = 16


def test_cannot_ptrace(session: Session) -> None:
    session.exec("sleep 30 &")
    code = (
        "import ctypes, os, subprocess\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "pid = int(subprocess.check_output(['pgrep', '-n', 'sleep']))\n"
        "rc = libc.ptrace(16, pid, 0, 0)\n"
        "print(rc, ctypes.get_errno())\n"
    )
    r = session.exec(["python3", "-c", code])
    rc, errno_ = r.stdout.split()
    assert rc == "-1" and int(errno_) == 1  # EPERM from the seccomp filter
    vm = session.exec(["python3", "-c",
                       ("import ctypes;l=ctypes.CDLL(None,use_errno=True);"
                        "print(l.syscall(310,1,0,0,0,0,0), ctypes.get_errno())")])
    assert vm.stdout.split() == ["-1", "1"]  # process_vm_readv


def test_cannot_mount_or_make_namespaces(session: Session) -> None:
    r = session.exec("mkdir -p /tmp/m && mount -t tmpfs none /tmp/m")
    assert r.exit_code != 0
    r = session.exec("unshare -r id")
    assert r.exit_code != 0
    r = session.exec("unshare -n true")
    assert r.exit_code != 0
    assert session.exec("grep -c ' /tmp/m ' /proc/mounts").stdout.strip() == "0"


def test_cannot_gain_capabilities(session: Session) -> None:
    status = session.exec("grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' "
                          "/proc/self/status").stdout
    fields = dict(line.split(":\t") for line in status.strip().splitlines())
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, cap
    assert fields["NoNewPrivs"] == "1"
    r = session.exec(["python3", "-c", "import os; os.setuid(0)"])
    assert r.exit_code != 0  # EINVAL: uid 0 is not even mapped in the namespace
    # setuid binaries do not elevate under no_new_privs
    su = session.exec("su -c id root < /dev/null")
    assert su.exit_code != 0
    # on the host the workload is an unprivileged, dedicated uid
    uid_line = session.exec("sleep 5 & sleep 0.2; echo started")
    assert uid_line.exit_code == 0
    host_pids = session.sandbox.cgroup.pids()
    uids = {os.stat(f"/proc/{pid}").st_uid for pid in host_pids if os.path.exists(f"/proc/{pid}")}
    assert uids == {session.host_uid} and session.host_uid >= 2_000_000


def test_cannot_see_host_processes(session: Session) -> None:
    token = secrets.token_hex(6)
    host_proc = subprocess.Popen(["sleep", f"77{int(token[:4], 16)}"])
    try:
        r = session.exec("ps -eo pid,args")
        assert f"sleep 77{int(token[:4], 16)}" not in r.stdout
        assert session.exec(f"test -e /proc/{host_proc.pid}/cmdline && echo seen").stdout == "" \
            or host_proc.pid < 10  # tiny pids may collide with sandbox pids
        pids = [int(line.split()[0]) for line in r.stdout.strip().splitlines()[1:]]
        assert max(pids) < 50  # only the sandbox's own few processes exist in its namespace
    finally:
        host_proc.kill()
        host_proc.wait()


def test_network_reaches_nothing_but_loopback(session: Session) -> None:
    # a server on the host's loopback must not be reachable from the sandbox
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        r = session.exec(f"curl -sSf --max-time 2 http://127.0.0.1:{port}/")
        assert r.exit_code != 0
        r2 = session.exec("curl -sSf --max-time 2 http://203.0.113.10/")
        assert r2.exit_code != 0
        # a connection that got through would sit in the listen backlog whatever the
        # timing: nothing there once the calls are over
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
        # loopback inside the sandbox itself works
        inside = session.exec(
            "python3 -c \"import socket;s=socket.socket();s.bind(('127.0.0.1',8099));"
            "s.listen();c=socket.create_connection(('127.0.0.1',8099));print('ok')\"")
        assert inside.stdout == "ok\n"
    finally:
        server.close()


def test_no_process_survives_close(make_session) -> None:
    s = make_session()
    s.exec("sleep 1000 &")
    s.exec("setsid nohup sleep 1001 > /dev/null 2>&1 &")
    s.exec("(sleep 1002 &) &")  # double fork: reparented to the sandbox's init
    s.exec("python3 -c \"import os,time\nif os.fork()==0:\n  os.setsid()\n  if os.fork()==0:\n"
           "    open('/workspace/deep', 'w').close()\n    time.sleep(1003)\n\" &")
    # every sleeper is running (the double forks may still be under way when their
    # call returns): waited for inside, on any machine speed
    settled = s.exec("until [ -e /workspace/deep ] && "
                     "[ \"$(pgrep -c -f '^sleep 100[0-2]$')\" -ge 3 ]; do sleep 0.02; done",
                     timeout=60)
    assert settled.outcome is Outcome.OK
    host_pids = s.sandbox.cgroup.pids()
    cgroup_dir = s.sandbox.cgroup.unified
    assert len(host_pids) >= 6  # bwrap, init, supervisor and the sleepers
    s.close()
    # gone the moment close() returns: not running, not frozen, not even a zombie
    assert [p for p in host_pids if pid_alive(p)] == []
    assert not cgroup_dir.exists()


def test_closed_session_refuses_calls(make_session) -> None:
    from bastion import SessionClosed

    s = make_session()
    s.close()
    s.close()  # idempotent
    with pytest.raises(SessionClosed):
        s.exec("true")


def test_background_process_persists_between_calls(session: Session) -> None:
    r = session.exec("sleep 30 & echo $! > /workspace/pid")
    assert r.outcome is Outcome.OK
    assert session.exec("kill -0 $(cat /workspace/pid) && echo alive").stdout == "alive\n"


_LISTENER_ATTACK = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
# every fd of every process the agent can see: none is the exec listener
seen, listeners = 0, []
for p in os.listdir('/proc'):
    if not p.isdigit():
        continue
    try:
        fds = os.listdir(f'/proc/{p}/fd')
    except OSError:
        continue  # the supervisor is non-dumpable: its fd/ is closed to the agent
    for fd in fds:
        seen += 1
        try:
            if 'seccomp' in os.readlink(f'/proc/{p}/fd/{fd}'):
                listeners.append((p, fd))
        except OSError:
            pass
print('listeners', listeners, seen > 0)
# steal an fd of the supervisor's with pidfd_getfd (438): refused by the deny list
sup = None
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            c = open(f'/proc/{p}/cmdline', 'rb').read().split(b'\0')
        except OSError:
            continue
        if c[0].endswith(b'python3') and c[1:3] == [b'-I', b'-S']:
            sup = int(p)
pidfd = os.pidfd_open(sup)
got = [libc.syscall(438, pidfd, fd, 0) for fd in range(0, 16)]
print('getfd', sorted(set(got)), ctypes.get_errno())
# install a listener of its own (to answer its own execs): one listener per task tree
prog = (ctypes.c_uint64 * 1)(0x7FFF0000 << 32 | 0x06)  # BPF_RET|BPF_K SECCOMP_RET_ALLOW
fprog = (ctypes.c_uint64 * 2)(1, ctypes.addressof(prog))
rc = libc.syscall(317, 1, 8, ctypes.byref(fprog))
print('listener', rc, ctypes.get_errno())
"""


def test_cannot_reach_or_replace_the_exec_listener(session: Session) -> None:
    """The exec listener (sandbox/execnotify.py) lives on the host only: the supervisor
    closed its copy after sending it, its fds are closed to the agent anyway, fds
    cannot be taken with pidfd_getfd, and a second listener cannot be installed."""
    import errno
    import platform

    from bastion.sandbox.execnotify import notifier

    if platform.machine() != "x86_64":
        pytest.skip("the attack spells x86_64 syscall numbers")
    r = session.exec(["python3", "-c", _LISTENER_ATTACK])
    assert r.exit_code == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert lines["listeners"] == "[] True"
    assert lines["getfd"] == f"[-1] {errno.EPERM}"
    assert lines["listener"] == f"-1 {errno.EBUSY}"
    before = notifier().handled
    assert session.exec("/bin/true").ok  # execs are still seen by the host
    assert notifier().handled > before
