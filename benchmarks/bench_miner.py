"""Miner -> contained: how long after its evidence appears, at any duty cycle.

A miner started in the background (``nohup ... &``, the call returns at once) is
judged by the compute detector: background compute, summed over the session, past
``background_cpu_seconds`` (default 1.5 core-seconds) within ``background_window``.
Its *evidence* is that sum crossing the budget; it appears at the first resource
sample after the crossing (samples every ``sample_interval``, 250 ms by default).

For each shape (full duty; 85% duty split over two processes; 25% duty) and each
round, in a real session with the default policy, engine and responder:

* ``evidence -> kill``: from the resource sample that carried the crossing to the
  responder's kill action (``action`` event), both stamped by bastion's monotonic
  clock; plus the sampling delay (<= one interval) this cannot see;
* ``evidence -> gone``: until every miner process has left the call cgroup;
* ``start -> kill``: from the call's return, for scale (it grows as the duty falls:
  a 25% miner takes 4x as long to use its budget).

Baseline in the same run: ``cgroup.kill`` of a burner placed directly in a cgroup
(the floor of any kill).

    .venv/bin/python benchmarks/bench_miner.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bastion import Policy, Session
from bastion.events import EventKind

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, summary_ms

SHAPES = {
    "full duty, 1 process": "import hashlib\nh=b'x'\nwhile True: h=hashlib.sha256(h).digest()",
    "85% duty, 2 processes": (
        "import os,time\n"
        "def w():\n"
        "    while True:\n"
        "        t=time.monotonic()\n"
        "        while time.monotonic()-t<0.085: pass\n"
        "        time.sleep(0.015)\n"
        "os.fork()==0 and w()\nw()"),
    "25% duty, 1 process": (
        "import time\n"
        "while True:\n"
        "    t=time.monotonic()\n"
        "    while time.monotonic()-t<0.05: pass\n"
        "    time.sleep(0.15)"),
}
COMPUTE = ("detector.background_compute", "detector.compute_budget",
           "detector.compute_with_mining_evidence")


def _pcts(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return (f"p50 {statistics.median(ordered) * 1000:7.0f} ms  p90 {p90 * 1000:7.0f} ms  "
            f"max {ordered[-1] * 1000:7.0f} ms")


def one(state_dir: Path, code: str) -> dict[str, float] | None:
    with Session(Policy.default(), state_dir=state_dir) as s:
        s.write_file("/workspace/m.py", code, call_id="c0")
        r = s.exec("nohup python3 /workspace/m.py >/dev/null 2>&1 &", call_id="c1", step=1)
        returned = time.monotonic_ns()
        assert r.exit_code == 0, r
        deadline = time.monotonic() + 60
        verdict = None
        while time.monotonic() < deadline and verdict is None:
            verdict = next((v for v in list(s.verdicts) if v.rule_id in COMPUTE), None)
            time.sleep(0.01)
        if verdict is None:
            return None
        evidence = next(e for e in list(s.events) if e.id == verdict.event_ids[-1])
        kill = None
        while kill is None and time.monotonic() < deadline:
            kill = next((e for e in list(s.events) if e.kind is EventKind.ACTION
                         and e.fields.get("action.verdict") == verdict.id), None)
            time.sleep(0.002)
        call_dir = s.view.cgroup.unified / "call-2"
        while (call_dir / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.002)
        gone = time.monotonic_ns()
        assert kill is not None
        return {"evidence_to_kill": (kill.ts - evidence.ts) / 1e9,
                "evidence_to_gone": (gone - evidence.ts) / 1e9,
                "start_to_kill": (kill.ts - returned) / 1e9,
                "interval": float(evidence.fields.get("res.interval") or 0.25)}


def baseline(rounds: int) -> list[float]:
    """cgroup.kill of a burner in a cgroup of its own (v2 unified hierarchy)."""
    root = Path("/sys/fs/cgroup/unified") if Path("/sys/fs/cgroup/unified/cgroup.procs").exists() \
        else Path("/sys/fs/cgroup")
    out = []
    for i in range(rounds):
        cg = root / f"bastion-bench-miner-{os.getpid()}-{i}"
        cg.mkdir()
        try:
            p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            (cg / "cgroup.procs").write_text(str(p.pid))
            time.sleep(0.2)
            t = time.monotonic()
            (cg / "cgroup.kill").write_text("1")
            p.wait()
            out.append(time.monotonic() - t)
        finally:
            while (cg / "cgroup.procs").read_text().strip():
                time.sleep(0.001)
            cg.rmdir()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    state_dir = Path(tempfile.mkdtemp(prefix="bastion-bench-miner-", dir="/var/tmp"))
    os.chmod(state_dir, 0o711)
    d = Policy.default().rules.detectors
    print(f"bench_miner: cpus={os.cpu_count()} python={sys.version.split()[0]} load="
          f"{os.getloadavg()[0]:.1f} budget={d.background_cpu_seconds} core-s / "
          f"{d.background_window:g} s, sample_interval={d.sample_interval} s")
    results: dict[str, object] = {"load": round(os.getloadavg()[0], 1),
                                   "budget_core_seconds": d.background_cpu_seconds,
                                   "sample_interval_s": d.sample_interval}
    try:
        base = baseline(args.rounds)
        results["baseline_cgroup_kill"] = summary_ms(base)
        print(f"{'baseline: cgroup.kill of a burner':<36} {_pcts(base)}")
        for name, code in SHAPES.items():
            runs = [one(state_dir, code) for _ in range(args.rounds)]
            done = [r for r in runs if r is not None]
            results[name] = {"contained": f"{len(done)}/{len(runs)}", **{
                key: summary_ms([r[key] for r in done]) for key in (
                    "evidence_to_kill", "evidence_to_gone", "start_to_kill") if done}}
            print(f"{name:<36} contained {len(done)}/{len(runs)}")
            for key in ("evidence_to_kill", "evidence_to_gone", "start_to_kill"):
                print(f"  {key:<34} {_pcts([r[key] for r in done])}")
            if done:
                print(f"  {'+ sampling delay (<= interval)':<34} "
                      f"{max(r['interval'] for r in done) * 1000:7.0f} ms at most")
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    emit("miner", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
