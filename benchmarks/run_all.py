"""Run every benchmark script (`make bench`), one after another, with progress output.

Each script prints its own figures and writes benchmarks/results/<name>.json; this
runner only sequences them and reports which failed. Scripts run one at a time because
the figures are ratios measured beside a baseline on a shared, noisy 2-core machine.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("bench_*.py"))
    if len(sys.argv) > 1:
        scripts = [p for p in scripts if any(arg in p.name for arg in sys.argv[1:])]
    failed = []
    for i, script in enumerate(scripts, 1):
        print(f"[{i}/{len(scripts)}] {script.name}", flush=True)
        t = time.monotonic()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"[{i}/{len(scripts)}] {script.name}: {'ok' if rc == 0 else f'FAILED ({rc})'} "
              f"in {time.monotonic() - t:.0f}s", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
