"""Sans-I/O parsers, byte by byte: the process connector and inotify."""

from __future__ import annotations

import struct

from bastion.sensors import inotify as ino
from bastion.sensors import netlink
from bastion.sensors.procfs import read_process, read_stat


def _msg(what: int, ts: int, body: bytes) -> bytes:
    event = struct.pack("=IIQ", what, 0, ts) + body
    cn = struct.pack("=IIIIHH", 1, 1, 7, 0, len(event), 0) + event
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 7, 0) + cn


def test_parse_fork_exec_exit():
    data = (_msg(netlink.FORK, 10, struct.pack("=IIII", 100, 100, 101, 101))
            + _msg(netlink.EXEC, 11, struct.pack("=II", 101, 101))
            + _msg(netlink.EXIT, 12, struct.pack("=IIIIII", 101, 101, 9, 17, 100, 100)))
    fork, exec_, exit_ = netlink.parse(data)
    assert (fork.what, fork.pid, fork.tgid, fork.ppid, fork.ptgid, fork.ts) == (
        netlink.FORK, 101, 101, 100, 100, 10)
    assert (exec_.what, exec_.tgid, exec_.ts) == (netlink.EXEC, 101, 11)
    assert (exit_.what, exit_.tgid, exit_.exit_code, exit_.exit_signal) == (
        netlink.EXIT, 101, 9, 17)


def test_parse_ignores_other_messages_and_truncation():
    other = _msg(0x200, 1, struct.pack("=II", 5, 5) + b"comm".ljust(16, b"\0"))  # PROC_EVENT_COMM
    ack = _msg(0, 1, struct.pack("=I", 0))  # the subscription ack (PROC_EVENT_NONE)
    full = _msg(netlink.EXEC, 3, struct.pack("=II", 9, 9))
    assert netlink.parse(other + ack) == []
    assert netlink.parse(full[:-4]) == []  # cut short: nothing invented
    assert [e.tgid for e in netlink.parse(other + full)] == [9]
    assert netlink.parse(b"") == []


def test_inotify_parse_events():
    name = b"authorized_keys\0\0\0\0\0"
    data = (struct.pack("=iIII", 3, ino.IN_CLOSE_WRITE, 0, len(name)) + name
            + struct.pack("=iIII", 4, ino.IN_Q_OVERFLOW, 0, 0))
    first, second = ino.parse_events(data)
    assert (first.wd, first.mask, first.name) == (3, ino.IN_CLOSE_WRITE, "authorized_keys")
    assert (second.wd, second.mask, second.name) == (4, ino.IN_Q_OVERFLOW, "")


def test_read_process_of_a_reaped_pid_is_partial():
    import subprocess

    p = subprocess.Popen(["/bin/true"])
    p.wait()
    info = read_process(p.pid)
    assert info.partial and info.args == () and info.exe == ""
    assert read_stat(p.pid) is None


def test_read_process_of_self():
    import os

    info = read_process(os.getpid())
    assert not info.partial and info.pid == os.getpid() and info.ppid == os.getppid()
    assert info.exe.endswith(("python", "python3", "python3.11")) or "python" in info.exe
    assert info.cgroup is not None and info.args


def test_process_name_is_the_executed_basename_like_falco():
    from bastion.sensors.procfs import process_name

    assert process_name("python3", "/usr/bin/python3.11", ["python3", "x.py"]) == "python3"
    assert process_name("nc", "/usr/bin/nc.openbsd", ["nc", "-l"]) == "nc"
    # comm is cut at 15 characters: the full basename is recovered when it agrees
    assert process_name("python3-worker-", "/workspace/python3-worker-long",
                        ["./python3-worker-long"]) == "python3-worker-long"
    assert process_name("kworker", "/workspace/xmrig", ["xmrig"]) == "kworker"  # renamed
    assert process_name("", "/usr/bin/sleep", []) == "sleep"  # no status: exe
    assert process_name("", "", []) == ""


def test_socket_owner_finds_the_process_holding_a_connection():
    import os
    import socket

    from bastion.sensors.sockets import socket_owner

    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        ip, port = client.getsockname()
        assert socket_owner([os.getpid()], ip, port) == os.getpid()
        assert socket_owner([os.getpid()], ip, 1) is None  # nobody has that port
        assert socket_owner([], ip, port) is None
        assert socket_owner([os.getpid()], "not-an-ip", port) is None
    finally:
        for sock in (client, peer, server):
            sock.close()


def _fan_event(mask: int, pid: int, handle: bytes, name: bytes, info_type: int = 2) -> bytes:
    fid = struct.pack("=ii", 7, 9) + struct.pack("=Ii", len(handle), 1) + handle + name + b"\0"
    fid += b"\0" * (-(len(fid) + 4) % 8)
    info = struct.pack("=BBH", info_type, 0, 4 + len(fid)) + fid
    return struct.pack("=IBBHQii", 24 + len(info), 3, 0, 24, mask, -1, pid) + info


def test_fanotify_parse_events_names_the_writer_and_the_directory():
    from bastion.sensors.fanotify import FAN_DELETE_SELF, FAN_Q_OVERFLOW, _key, parse_events

    dirs = {_key(1, b"HANDLE01"): 5}
    data = (_fan_event(ino.IN_CLOSE_WRITE | 0x08000000, 4242, b"HANDLE01", b".bashrc")
            + _fan_event(ino.IN_CREATE | ino.IN_ISDIR, 4243, b"HANDLE01", b"hooks")
            + _fan_event(ino.IN_CLOSE_WRITE, 1, b"OTHERDIR", b"x")  # not ours: skipped
            + _fan_event(FAN_DELETE_SELF, 4244, b"HANDLE01", b".", info_type=2)
            + struct.pack("=IBBHQii", 24, 3, 0, 24, FAN_Q_OVERFLOW, -1, 0))
    events = parse_events(data, dirs)
    assert [(e.wd, e.name, e.pid) for e in events[:3]] == [
        (5, ".bashrc", 4242), (5, "hooks", 4243), (5, "", 4244)]
    assert events[0].mask == ino.IN_CLOSE_WRITE  # FAN_EVENT_ON_CHILD is not a change
    assert events[1].mask & ino.IN_ISDIR and events[1].mask & ino.IN_CREATE
    assert events[2].mask & ino.IN_IGNORED
    assert events[3].mask & ino.IN_Q_OVERFLOW
