"""A harness that drives sessions through the node declares its own program in the
sandbox (``trust_executable``) over the protocol: exactly that path and content."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from bastion.daemon import AsyncNodeClient, NodeClient
from bastion.daemon.protocol import ProtocolError
from bastion.daemon.server import NodeServer
from tests.conftest import wait_for

pytestmark = pytest.mark.needs_root

RULE = "download_exec.exec_from_tmp"
TOOL = "/var/tmp/.harness/tool"
# an ELF program that lasts a second, so its exec is seen with its image under load
PROGRAM = Path("/bin/sleep").read_bytes()


def test_a_remote_handle_declares_the_harness_program(node: NodeServer,
                                                      state_dir: Path) -> None:
    client = NodeClient.for_state_dir(state_dir)
    with client.session(run_id="r-trust", episode_id="e1") as s:
        assert s.write_file(TOOL, PROGRAM, call_id="w").ok
        assert s.exec(f"chmod +x {TOOL}", call_id="x").ok
        with pytest.raises(ProtocolError, match="sha256"):
            s.trust_executable(TOOL, "nope")
        s.trust_executable(TOOL, hashlib.sha256(PROGRAM).hexdigest())
        assert s.exec(f"{TOOL} 1", call_id="trusted").ok
        # the same program copied elsewhere is still reported (settled by the late poll)
        assert s.exec(f"cp {TOOL} /var/tmp/.harness/copy && /var/tmp/.harness/copy 1",
                      call_id="copy").ok
        flagged = wait_for(lambda: [v.call_id for v in s.poll_verdicts(wait=1)
                                    if v.rule_id == RULE] or None, timeout=60)
        assert flagged and "copy" in flagged and "trusted" not in flagged
        assert all(v.call_id != "trusted" for v in s.verdicts if v.rule_id == RULE)


def test_an_async_remote_handle_declares_it_too(node: NodeServer, state_dir: Path) -> None:
    async def main() -> list[str]:
        client = AsyncNodeClient.for_state_dir(state_dir)
        async with await client.session(run_id="r-trust", episode_id="e2") as s:
            assert (await s.write_file(TOOL, PROGRAM, call_id="w")).ok
            assert (await s.exec(f"chmod +x {TOOL}", call_id="x")).ok
            await s.trust_executable(TOOL, hashlib.sha256(PROGRAM).hexdigest())
            assert (await s.exec(f"{TOOL} 1", call_id="trusted")).ok
            assert (await s.exec(f"printf x >> {TOOL} && {TOOL} 1", call_id="changed")).ok
            for _ in range(60):
                await s.poll_verdicts(wait=1)
                if any(v.rule_id == RULE for v in s.verdicts):
                    break
            return [v.call_id for v in s.verdicts if v.rule_id == RULE]

    flagged = asyncio.run(main())
    assert "changed" in flagged and "trusted" not in flagged
