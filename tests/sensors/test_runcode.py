"""Mining evidence from the code a busy background process runs (sensors/runcode.py):
a nonce search no call wrote (already in the workspace, decoded, downloaded) is judged
when it runs, in a real session."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bastion.sensors.runcode import mining_code

from .monitor import wait_for

SOLVER = ("import hashlib\ntarget = 1 << 240\nnonce = 0\nwhile True:\n"
          "    h = hashlib.sha256(hashlib.sha256(b'hdr' + nonce.to_bytes(8, 'little')).digest())"
          ".digest()\n    if int.from_bytes(h, 'big') < target:\n        pass\n    nonce += 1\n")


def test_a_nonce_search_no_call_wrote_is_killed_when_it_runs(monitored) -> None:
    def prepare(workspace: Path, uid: int) -> None:
        (workspace / ".cache").mkdir()
        (workspace / ".cache" / "solver.py").write_text(SOLVER)

    s = monitored(prepare=prepare)
    r = s.exec("nohup python3 .cache/solver.py >/dev/null 2>&1 &", call_id="c1", step=1)
    assert r.exit_code == 0
    [kill] = wait_for(lambda: [v for v in list(s.verdicts)
                               if v.rule_id == "detector.compute_with_mining_evidence"], timeout=90)
    assert kill.call_id == "c1" and ".cache/solver.py" in kill.message
    assert wait_for(lambda: not (s.view.cgroup.unified / "call-1" / "cgroup.procs")
                    .read_text().strip())


def test_only_one_purpose_code_is_evidence(tmp_path: Path) -> None:
    """A plain busy loop, a bounded hash benchmark and a non-interpreter are not; a
    script given by a path that is a FIFO is never read (it would block)."""
    honest = {"loop.py": "while True:\n    x = sum(range(1000))\n",
              "bench.py": ("import hashlib, time\nn, end = 0, time.time() + 30\n"
                           "while time.time() < end:\n    hashlib.sha256(str(n).encode())"
                           ".digest(); n += 1\n")}
    procs = []
    try:
        for name, code in honest.items():
            (tmp_path / name).write_text(code)
            procs.append(subprocess.Popen([sys.executable, str(tmp_path / name)]))
        os.mkfifo(tmp_path / "fifo.py")
        procs.append(subprocess.Popen([sys.executable, str(tmp_path / "fifo.py")]))
        procs.append(subprocess.Popen(["sleep", "30"]))
        time.sleep(0.2)
        assert [mining_code(p.pid) for p in procs] == [None] * len(procs)
        (tmp_path / "solver.py").write_text(SOLVER)
        miner = subprocess.Popen([sys.executable, "solver.py"], cwd=tmp_path)
        procs.append(miner)
        found = wait_for(lambda: mining_code(miner.pid))
        assert "nonce search" in found and "solver.py" in found
    finally:
        for p in procs:
            p.kill()
            p.wait()
