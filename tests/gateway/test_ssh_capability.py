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
