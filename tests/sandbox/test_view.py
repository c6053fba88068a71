"""What of the host a session can see: an allow list of system directories, and no
host path in any in-sandbox process's command line or environment."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from bastion.sandbox.bwrap import HOST_ALLOWED


def test_only_the_allow_list_of_the_host_is_visible(make_session) -> None:
    # a tree an operator added at the top level, after bastion was installed
    added = Path("/") / f"bastion-operator-{secrets.token_hex(4)}"
    added.mkdir()
    try:
        (added / "secret").write_text("TOPSECRET")
        s = make_session()
        r = s.exec(f"cat {added}/secret; ls /opt /srv /var/lib /var/log /mnt /root /home/*")
        assert "TOPSECRET" not in r.stdout
        top = set(s.exec("ls -A /").stdout.split())
        host_only = {"opt", "srv", "mnt", "media", "boot", "root", added.name}
        assert not top & host_only, top & host_only
        # what is there comes from the allow list or from bastion itself
        assert top <= HOST_ALLOWED | {"proc", "dev", "sys", "tmp", "var", "run", "home",
                                      "workspace"}
        # programs still run, and /etc works minus its secrets
        ok = s.exec("python3 -c 'print(1)' && grep -c root /etc/passwd && cat /etc/shadow")
        assert ok.stdout.startswith("1\n1\n") and ok.exit_code != 0
    finally:
        shutil.rmtree(added)


def test_no_host_path_in_any_process_argv_or_environ(make_session, state_dir: Path) -> None:
    s = make_session()
    s.exec("sleep 30 >/dev/null 2>&1 &")
    dump = (
        "import os\n"
        "for p in os.listdir('/proc'):\n"
        "    if not p.isdigit(): continue\n"
        "    for what in ('cmdline', 'environ'):\n"
        "        try: data = open(f'/proc/{p}/{what}', 'rb').read()\n"
        "        except OSError: continue\n"
        "        print(p, what, repr(data))\n"
    )
    r = s.exec(["python3", "-c", dump])
    assert r.exit_code == 0
    pids = {line.split()[0] for line in r.stdout.splitlines()}
    assert "1" in pids and len(pids) >= 3  # bwrap's pid 1, the sleeper, this process
    for needle in (str(state_dir), str(s.workspace), "--ro-bind", "/etc/shadow", "--bind"):
        assert needle not in r.stdout, needle
