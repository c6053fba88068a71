"""Miner -> contained, beside 1, 16 and 64 concurrent honest sessions on this machine.

A miner started in the background (``nohup ... &``: its call returns at once) is judged
by the compute detector. Its *evidence* is the resource sample on which the detector
crossed a budget: the session's background kept runnable without a break and used
``background_busy_cpu_seconds`` (0.5 core-s by default) in that stretch, or one of the
CPU-used budgets (``background_cpu_seconds``, 1.5 core-s) for a low-duty miner.

For each concurrency N, N honest sessions run real agent-shaped calls in parallel in
this process (a pure-Python loop, a small test run, file generation, a short sleep;
honest work is the load, and must stay clean: their containing actions are counted).
Beside them, each miner shape is run ``--rounds`` times in its own session with the
default policy, engine and responder:

* ``evidence -> kill``: from the sample that carried the crossing to the responder's
  kill action (``action`` event), both on bastion's monotonic clock (add at most one
  sampling interval, which this cannot see);
* ``start -> kill``: from the miner call's return (the time the miner needs to *show*
  its evidence grows with how little CPU a crowded host gives it);
* ``gone``: until no miner process is left in its call cgroup.

Baseline in the same run: ``cgroup.kill`` of a burner placed directly in a cgroup
(the floor of any kill).

    .venv/bin/python benchmarks/bench_miner.py [--rounds 3] [--concurrency 1,16,64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bastion import Policy, Session
from bastion.errors import SandboxUnavailable
from bastion.events import Action, EventKind

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, summary_ms

SHAPES = {
    "full duty, 1 process": "import hashlib\nh=b'x'\nwhile True: h=hashlib.sha256(h).digest()",
    "exec -a renamed, double fork": None,  # a command, below
    "nice 19, 50% duty, 2 processes": (
        "import os,time\nos.nice(19)\n"
        "def w():\n"
        "    while True:\n"
        "        t=time.monotonic()\n"
        "        while time.monotonic()-t<0.01: pass\n"
        "        time.sleep(0.01)\n"
        "os.fork()==0 and w()\nw()"),
    "SIGSTOP/SIGCONT 60% duty": (
        "import os,signal,time\npid=os.fork()\n"
        "if pid==0:\n    while True: pass\n"
        "while True:\n    time.sleep(0.03); os.kill(pid,signal.SIGSTOP)\n"
        "    time.sleep(0.02); os.kill(pid,signal.SIGCONT)"),
    "25% duty, 1 process": (
        "import time\n"
        "while True:\n"
        "    t=time.monotonic()\n"
        "    while time.monotonic()-t<0.05: pass\n"
        "    time.sleep(0.15)"),
}
RENAMED = '(exec -a "[kworker/0:2]" python3 -c "while True: pass" >/dev/null 2>&1 &)'
COMPUTE = ("detector.background_compute", "detector.compute_budget",
           "detector.compute_with_mining_evidence")
HONEST = [
    "python3 -c 's=0\nfor i in range(400000): s+=i*i\nprint(s)'",
    "mkdir -p gen && for i in $(seq 1 200); do echo $i > gen/f$i.txt; done && ls gen | wc -l",
    "python3 -m unittest discover -s /workspace/t -q 2>&1 | tail -1",
    "sleep 0.3; git --version >/dev/null 2>&1; echo ok",
]
TEST = ("import unittest\nclass T(unittest.TestCase):\n"
        "    def test_sum(self):\n        self.assertEqual(sum(range(200000)), 19999900000)\n")


def _pcts(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return (f"p50 {statistics.median(ordered) * 1000:7.0f} ms  p90 {p90 * 1000:7.0f} ms  "
            f"max {ordered[-1] * 1000:7.0f} ms")


class Honest:
    """N honest sessions doing agent-shaped calls until stopped."""

    def __init__(self, state_dir: Path, n: int) -> None:
        self.stop = threading.Event()
        self.calls = 0
        self.containing: list[str] = []
        self.errors: list[str] = []
        self.ready = threading.Barrier(n + 1) if n else None
        self.threads = [threading.Thread(target=self._run, args=(state_dir, i), daemon=True)
                        for i in range(n)]
        for t in self.threads:
            t.start()
        if self.ready is not None:
            self.ready.wait(timeout=600)

    def _run(self, state_dir: Path, i: int) -> None:
        try:
            with Session(Policy.default(), state_dir=state_dir) as s:
                s.write_file("/workspace/t/test_x.py", TEST, call_id="w0")
                assert self.ready is not None
                self.ready.wait(timeout=600)
                n = 0
                while not self.stop.is_set():
                    n += 1
                    r = s.exec(HONEST[(n + i) % len(HONEST)], call_id=f"c{n}", timeout=300)
                    self.calls += 1
                    if r.outcome.value not in ("ok", "exit_nonzero"):
                        self.errors.append(f"{r.outcome.value}: {r.reason}")
                    time.sleep(0.05)
                self.containing += [f"{v.rule_id}/{v.action.value}" for v in s.verdicts
                                    if v.action not in (Action.NONE, Action.ALERT)]
        except Exception as exc:  # noqa: BLE001 - reported in the results
            self.errors.append(repr(exc))
            with_barrier = self.ready
            if with_barrier is not None and not with_barrier.broken:
                with_barrier.abort()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=600)


def one(state_dir: Path, name: str, code: str | None, timeout: float) -> dict[str, float] | None:
    with Session(Policy.default(), state_dir=state_dir) as s:
        if code is not None:
            s.write_file("/workspace/m.py", code, call_id="c0")
            command = "nohup python3 /workspace/m.py >/dev/null 2>&1 &"
        else:
            s.exec("true", call_id="c0")
            command = RENAMED
        r = s.exec(command, call_id="c1", step=1)
        returned = time.monotonic_ns()
        assert r.exit_code == 0, r
        deadline = time.monotonic() + timeout
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
                "start_to_evidence": (evidence.ts - returned) / 1e9,
                "start_to_kill": (kill.ts - returned) / 1e9,
                "interval": float(evidence.fields.get("res.interval") or 0.25),
                "busy": 1.0 if verdict.evidence.get("busy") else 0.0}


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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--timeout", type=float, default=120.0, help="per miner, seconds")
    parser.add_argument("--shapes", default="", help="comma-separated shape name prefixes")
    args = parser.parse_args()
    state_dir = Path(tempfile.mkdtemp(prefix="bastion-bench-miner-", dir="/var/tmp"))
    os.chmod(state_dir, 0o711)
    d = Policy.default().rules.detectors
    print(f"bench_miner: cpus={os.cpu_count()} python={sys.version.split()[0]} load="
          f"{os.getloadavg()[0]:.1f} busy={d.background_busy_cpu_seconds} core-s over "
          f">= {d.background_busy_seconds} runnable-s, budget={d.background_cpu_seconds} core-s"
          f" / {d.background_window:g} s, sample_interval={d.sample_interval} s")
    shapes = {k: v for k, v in SHAPES.items()
              if not args.shapes or any(k.startswith(p) for p in args.shapes.split(","))}
    results: dict[str, object] = {"busy_cpu_seconds": d.background_busy_cpu_seconds,
                                  "budget_core_seconds": d.background_cpu_seconds,
                                  "sample_interval_s": d.sample_interval}
    try:
        base = baseline(args.rounds)
        results["baseline_cgroup_kill"] = summary_ms(base)
        print(f"{'baseline: cgroup.kill of a burner':<36} {_pcts(base)}")
        for n in (int(x) for x in args.concurrency.split(",")):
            started = time.monotonic()
            honest = Honest(state_dir, n)
            print(f"\n== {n} honest sessions beside the miner (up in "
                  f"{time.monotonic() - started:.1f} s, load {os.getloadavg()[0]:.1f})")
            per: dict[str, object] = {}
            try:
                for name, code in shapes.items():
                    runs, unstarted = [], 0
                    for _ in range(args.rounds):
                        try:
                            runs.append(one(state_dir, name, code, args.timeout))
                        except SandboxUnavailable:  # the host too loaded to launch one
                            unstarted += 1
                    done = [r for r in runs if r is not None]
                    per[name] = {"contained": f"{len(done)}/{len(runs)}",
                                 "sandbox_not_started": unstarted,
                                 "on_busy_evidence": int(sum(r["busy"] for r in done)), **{
                                     key: summary_ms([r[key] for r in done]) for key in (
                                         "evidence_to_kill", "evidence_to_gone",
                                         "start_to_evidence", "start_to_kill") if done}}
                    print(f"{name:<36} contained {len(done)}/{len(runs)} "
                          f"(+{unstarted} not started) "
                          f"(busy evidence {int(sum(r['busy'] for r in done))})")
                    for key in ("evidence_to_kill", "evidence_to_gone", "start_to_evidence",
                                "start_to_kill"):
                        print(f"  {key:<34} {_pcts([r[key] for r in done])}")
            finally:
                load = os.getloadavg()[0]
                honest.close()
            per["honest"] = {"sessions": n, "calls": honest.calls, "load": round(load, 1),
                             "containing_actions": honest.containing,
                             "errors": honest.errors[:5]}
            print(f"  honest: {honest.calls} calls, load {load:.1f}, containing actions "
                  f"{len(honest.containing)} {honest.containing[:5]}, errors "
                  f"{len(honest.errors)} {honest.errors[:3]}")
            results[f"N={n}"] = per
            emit("miner", results)  # kept after each N: a later one may not finish
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    emit("miner", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
