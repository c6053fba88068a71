"""A workspace on the host's disk under the session's disk limit: what the overlay
costs an honest agent (``sandbox/scratch.py``, ``sandbox/writeback.py``).

One session per kind writes the same honest output (``--mb`` MB of random data and
``--files`` small files) into its workspace: bastion's own workspace (on the session's
tmpfs) as the baseline, then a workspace configured on the host's disk (overlaid,
written back into the directory at close). Reported: the writing call's time, the
close time (the write-back), and how many files the host directory kept.

    .venv/bin/python benchmarks/bench_workspace.py [--mb 300] [--files 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bastion import Policy, Session


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bastion-bench-ws-", dir="/var/tmp"))
    os.chmod(state, 0o711)
    command = (f"head -c {args.mb}M /dev/urandom > big.bin && mkdir -p src && "
               f"for i in $(seq {args.files}); do echo $i > src/f$i.py; done")
    try:
        for kind in ("bastion's own workspace", "host workspace (overlay)"):
            ws = Path(tempfile.mkdtemp(prefix="bastion-bench-ws-", dir="/var/tmp"))
            sandbox: dict[str, object] = {"limits": {"disk": "1GiB"}}
            if kind.startswith("host"):
                sandbox["workspace"] = str(ws)
            s = Session(Policy.from_dict({"sandbox": sandbox}), state_dir=state)
            t = time.monotonic()
            r = s.exec(command, timeout=600)
            run = time.monotonic() - t
            t = time.monotonic()
            s.close()
            close = time.monotonic() - t
            kept = sum(1 for _ in ws.rglob("*"))
            print(f"{kind:<26} exit {r.exit_code}  write {run:6.1f} s  close {close:5.2f} s  "
                  f"host files kept {kept}  load {os.getloadavg()[0]:.0f}")
            shutil.rmtree(ws, ignore_errors=True)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
