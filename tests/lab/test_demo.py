"""The network chapter of the demo shows both refusals and checks the far ends."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from bastion.lab import Lab
from bastion.lab.demo import chapter_network


def test_network_chapter(lab: Lab, state_dir: Path) -> None:
    out = io.StringIO()
    assert chapter_network(Console(file=out, width=160), str(state_dir)) == 0
    text = out.getvalue()
    assert "gateway.miner_protocol" in text
    # the reverse tunnel: refused by the gateway, or stopped as the ssh client starts
    assert "gateway.default_deny" in text or "tunnels.ssh_forward_exec" in text
    assert "mining pool received 0 bytes; sshd logged 0 connections" in text
    assert lab.is_up()  # a lab the chapter did not start is left running
