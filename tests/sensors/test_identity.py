"""Program identity (sensors/identity.py): a renamed copy of a system program is known
by its bytes; the program itself is never a copy of itself, whatever path the exec
event names (a #! script's exec names the script while /proc/PID/exe is env)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from bastion.sensors.identity import ProgramIdentity, family


def _running(argv: list[str]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(argv)
    time.sleep(0.3)  # exec'd
    return p


def test_a_copy_is_named_by_what_it_copies_and_the_original_is_not_a_copy(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash
    copy = tmp_path / "rt"
    shutil.copy(bash, copy)
    ident = ProgramIdentity()
    procs = [_running([str(copy), "-c", "sleep 3; true"]), _running([bash, "-c", "sleep 3; true"])]
    try:
        assert ident.copy_of(procs[0].pid, str(copy)) == "bash"
        # the original, whatever path the event gave (the script a #! line ran)
        assert ident.copy_of(procs[1].pid, str(tmp_path / "tool.pyz")) is None
        assert ident.copy_of(procs[1].pid, bash) is None  # a system path: not looked at
        other = tmp_path / "mine"
        other.write_bytes(b"\x7fELF" + b"\0" * 64)
        assert ident.copy_of(procs[0].pid, str(other)) == "bash"  # by the exe's bytes
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_version_is_not_a_rename() -> None:
    assert family("python3.11") == family("python") == family("python3")
    assert family("perl5.36") == "perl"
    assert family("bash") != family("rt")
