"""Small helpers shared by the benchmark scripts: percentiles and a results table."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def summary_ms(samples: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in samples]
    return {"p50_ms": round(pct(ms, 50), 3), "p95_ms": round(pct(ms, 95), 3),
            "p99_ms": round(pct(ms, 99), 3), "mean_ms": round(statistics.fmean(ms), 3),
            "n": len(ms)}


def bench_state_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="bastion-bench-", dir="/var/tmp"))
    os.chmod(path, 0o711)
    return path


def emit(name: str, results: dict) -> None:
    """Print the figures and keep them as JSON under benchmarks/results/."""
    print(json.dumps({name: results}, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2))


def bastion_command() -> str:
    import shutil
    import sys

    return shutil.which("bastion") or str(Path(sys.executable).with_name("bastion"))


def start_node(state: Path, *extra: str):  # -> subprocess.Popen
    """A `bastion node` for ``state``, returned once it answers (benchmarks through the
    daemon). The caller stops it with SIGTERM."""
    import subprocess
    import time

    from bastion.daemon import NodeClient

    env = {**os.environ, "BASTION_STATE_DIR": str(state)}
    node = subprocess.Popen([bastion_command(), "node", *extra], env=env,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while NodeClient.running(state) is None:
        if time.monotonic() > deadline or node.poll() is not None:
            node.kill()
            raise SystemExit("bastion node did not start")
        time.sleep(0.1)
    return node
