"""The lab itself: ``bastion lab up|status|down`` builds, reports and removes it, and
leaves nothing behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from typer.testing import CliRunner

from bastion.cli import lab as lab_cli
from bastion.lab import Lab
from bastion.lab.topology import HOSTS, lookup


def _app() -> typer.Typer:
    app = typer.Typer()
    lab_cli.register(app)

    @app.callback()
    def _root() -> None:  # keep "lab" a subcommand
        pass

    return app


def test_zone_lookup() -> None:
    assert lookup("allowed.lab.test") == "203.0.113.80"
    assert lookup("a.b.Allowed.Lab.Test.") == "203.0.113.80"
    assert lookup("lab.test") is None
    assert all(h.ip.startswith(("198.51.100.", "203.0.113.")) for h in HOSTS)


def test_status_of_the_running_lab(lab: Lab) -> None:
    result = CliRunner().invoke(_app(), ["lab", "status", "--json", "--name", lab.name])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["up"] and info["name"] == lab.name
    assert {h["host"] for h in info["hosts"]} == {h.key for h in HOSTS}
    assert set(info["processes"]) == {"servers", "sshd"}
    human = CliRunner().invoke(_app(), ["lab", "status", "--name", lab.name])
    assert "pool bytes recorded" in human.output


def test_up_down_leaves_nothing() -> None:
    name = f"bstlc{os.getpid() % 100000}"
    runner = CliRunner()
    result = runner.invoke(_app(), ["lab", "up", "--json", "--name", name])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    pids = list(info["processes"].values())
    assert len(pids) == 2 and all(Path(f"/proc/{p}").exists() for p in pids)
    assert Path(info["netns"]).exists()
    result = runner.invoke(_app(), ["lab", "down", "--name", name])
    assert result.exit_code == 0
    assert not Path(info["netns"]).exists() and not Path(info["root"]).exists()
    assert not any(Path(f"/proc/{p}").exists() for p in pids)
    result = runner.invoke(_app(), ["lab", "status", "--json", "--name", name])
    assert result.exit_code == 1 and json.loads(result.output)["up"] is False


def test_bad_lab_name_is_refused() -> None:
    result = CliRunner().invoke(_app(), ["lab", "status", "--name", "notbst"])
    assert result.exit_code != 0
