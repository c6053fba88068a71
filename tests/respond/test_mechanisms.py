"""The response mechanisms on their own: quarantine budget, webhook URL checks."""

from __future__ import annotations

import json
import os

import pytest

from bastion.respond.quarantine import quarantine
from bastion.respond.webhook import WebhookSender


def test_quarantine_respects_its_size_budget(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "small.txt").write_text("x" * 10)
    (ws / "big.bin").write_bytes(b"\0" * 4096)
    dest = quarantine(root=tmp_path / "state", session_id="s1", workspace=ws,
                      pids=[os.getpid()], verdict={"rule_id": "r"}, budget=1000)
    assert (dest / "workspace" / "small.txt").exists()
    assert not (dest / "workspace" / "big.bin").exists()
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["files_skipped"] == 1 and "budget" in manifest["skipped"][0]
    procs = json.loads((dest / "processes.json").read_text())
    assert procs[0]["pid"] == os.getpid()


def test_webhook_must_be_http():
    with pytest.raises(ValueError):
        WebhookSender("file:///etc/passwd")
