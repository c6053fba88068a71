"""`bastion <command>` imports only what that command needs: a one-shot `bastion check`
must not pay for the sandbox, netlink, the gateway, the lab or the server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bastion.cli import _COMMAND_MODULES, _module_for, build_app

_PROBE = """
import io, json, sys
sys.argv = ["bastion", *json.loads(sys.argv[1])]
sys.stdin = io.StringIO("ls -la\\n")
from bastion.cli import main
try:
    main()
except SystemExit:
    pass
print("MODULES=" + json.dumps(sorted(m for m in sys.modules if m.startswith(("bastion", "pyroute2")))))
"""


def _modules_after(args: list[str]) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    line = next(x for x in out.splitlines() if x.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES=")))


def test_check_loads_no_sandbox_gateway_or_server() -> None:
    loaded = _modules_after(["check"])
    assert "bastion.cli.check" in loaded and "bastion.rules" in loaded
    heavy = {"bastion.session", "bastion.sandbox", "bastion.gateway", "bastion.lab",
             "bastion.serve", "bastion.redteam", "bastion.rl", "pyroute2", "bastion.cli.run"}
    assert not heavy & loaded, heavy & loaded


@pytest.mark.parametrize("argv,expected", [
    (["check"], "check"),
    (["serve-token", "--admin"], "serve-token"),
    (["audit", "verify"], "audit"),
    (["--help"], None),
    ([], None),
    (["chekc"], None),  # a typo gets the whole command and its "no such command"
])
def test_the_named_command_is_the_only_one_loaded(argv: list[str],
                                                  expected: str | None) -> None:
    assert _module_for(argv) == expected


def test_every_registered_command_is_listed_for_dispatch() -> None:
    """A command a module registers but the dispatch table does not name would be
    unreachable from the console script."""
    app = build_app()
    registered = {c.name for c in app.registered_commands} | {
        g.name for g in app.registered_groups}
    listed = {name for names in _COMMAND_MODULES.values() for name in names}
    assert registered == listed


def test_a_single_command_keeps_its_name(tmp_path: object) -> None:
    proc = subprocess.run([sys.executable, "-m", "bastion", "check", "--help"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0
    assert "bastion check" in proc.stdout
