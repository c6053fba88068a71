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


def test_code_fed_on_stdin_or_decoded_from_a_data_file_is_read(tmp_path: Path) -> None:
    """Held-out misses: `nohup python3 - < job.dat` (the program is the standard input's
    file) and `python3 -c "exec(base64.b64decode(open('w.b64').read()))"` (the program
    is a data file's decoding). A bounded loop fed the same ways is not evidence."""
    import base64
    import codecs
    (tmp_path / "job.dat").write_text(SOLVER)
    (tmp_path / "w.b64").write_text(base64.b64encode(SOLVER.encode()).decode())
    (tmp_path / "notes.txt").write_text(codecs.encode(SOLVER, "rot13"))
    (tmp_path / "loop.dat").write_text("while True:\n    x = sum(range(1000))\n")
    procs = []
    try:
        with open(tmp_path / "job.dat") as job, open(tmp_path / "loop.dat") as loop:
            stdin_miner = subprocess.Popen([sys.executable, "-"], stdin=job, cwd=tmp_path)
            honest = subprocess.Popen([sys.executable, "-"], stdin=loop, cwd=tmp_path)
        procs += [stdin_miner, honest]
        decoded = subprocess.Popen(
            [sys.executable, "-c",
             "import base64; exec(base64.b64decode(open('w.b64').read()))"], cwd=tmp_path)
        rot = subprocess.Popen(
            [sys.executable, "-c",
             "import codecs; exec(codecs.decode(open('notes.txt').read(), 'rot13'))"],
            cwd=tmp_path)
        procs += [decoded, rot]
        for p in (stdin_miner, decoded, rot):
            found = wait_for(lambda p=p: mining_code(p.pid))
            assert found and "nonce search" in found, found
        assert "standard input" in mining_code(stdin_miner.pid)
        assert mining_code(honest.pid) is None
    finally:
        for p in procs:
            p.kill()
            p.wait()
