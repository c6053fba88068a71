"""Session figures, each beside its baseline in the same run.

    python benchmarks/bench_session.py [--creates 60] [--calls 300] [--idle 500]
                                       [--tamper 10] [--disk]

- session create p50/p95 (sandbox + cgroups [+ netns when the gateway is on])
- per-call overhead of Session.exec over bare subprocess.run of the same command and
  over a plain one-shot `bwrap` launch of it
- concurrent idle sessions, and host memory per session
- supervisor tamper -> session ended with a monitor_tamper verdict: seconds from the
  agent's SIGSTOP (stamped inside the sandbox, same wall clock) to the verdict
- disk limit held: bytes a `head -c 3G` into the workspace kept under a 64 MiB limit,
  and the host's free space before/after
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import bench_state_dir, emit, pct, summary_ms  # noqa: E402

from bastion import Session  # noqa: E402
from bastion.host import Host  # noqa: E402


def meminfo_available() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable")


def bench_create(state, n: int) -> dict:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s = Session(state_dir=state)
        times.append(time.perf_counter() - t)
        s.close()
    return summary_ms(times)


def bench_calls(state, n: int) -> dict:
    cmd = "true"
    bare, inside, bw = [], [], []
    bwrap = [shutil.which("bwrap"), "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev",
             "--proc", "/proc", "/bin/bash", "-c", cmd]
    with Session(state_dir=state) as s:
        for _ in range(20):  # warm-up
            s.exec(cmd)
            subprocess.run(["/bin/bash", "-c", cmd])
        # bare and session calls interleaved, so load changes hit both alike; one-shot
        # bwrap in its own block afterwards, because each launch leaves the kernel
        # tearing down its namespaces (deferred work that would land on the next call)
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run(["/bin/bash", "-c", cmd])
            bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            s.exec(cmd)
            inside.append(time.perf_counter() - t)
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run(bwrap, user=2_999_999, group=2_999_999, extra_groups=[])
            bw.append(time.perf_counter() - t)
    over = [a - b for a, b in zip(sorted(inside), sorted(bare))]
    return {
        "bare_subprocess": summary_ms(bare),
        "session_exec": summary_ms(inside),
        "oneshot_bwrap": summary_ms(bw),
        "overhead_vs_subprocess_p50_ms": round(pct(over, 50) * 1000, 3),
        "session_vs_oneshot_bwrap_p50_ratio": round(pct(inside, 50) / pct(bw, 50), 3),
    }


def bench_idle(state, n: int) -> dict:
    before = meminfo_available()
    sessions = []
    t = time.perf_counter()
    try:
        for i in range(n):
            sessions.append(Session(state_dir=state))
            if (i + 1) % 100 == 0:
                print(f"  {i + 1} idle sessions", file=sys.stderr)
        created = time.perf_counter() - t
        time.sleep(1)
        used = before - meminfo_available()
        alive = sum(1 for s in sessions if s.exec("true").exit_code == 0)
    finally:
        for s in sessions:
            s.close()
    return {"sessions": n, "all_responsive": alive == n, "responsive": alive,
            "create_all_s": round(created, 2),
            "host_mem_per_session_mib": round(used / n / 2**20, 2)}


def bench_tamper(state, n: int) -> dict:
    """Seconds from a background job's SIGSTOP of the supervisor to the verdict."""
    find = ("import os\nfor p in os.listdir('/proc'):\n if p.isdigit():\n"
            "  c=open(f'/proc/{p}/cmdline','rb').read().split(b'\\0')\n"
            "  if c[0].endswith(b'python3') and c[1:3]==[b'-I',b'-S']: print(p)")
    times = []
    for _ in range(n):
        with Session(state_dir=state) as s:
            pid = int(s.exec(["python3", "-c", find]).stdout.split()[0])
            s.exec(f"(sleep 0.2; python3 -c 'import os,time; print(time.time(), flush=True); "
                   f"os.kill({pid}, 19)' > /workspace/stamp) >/dev/null 2>&1 &")
            deadline = time.monotonic() + 30
            while not any(v.rule_id == "monitor_tamper.supervisor_lost" for v in s.verdicts):
                if time.monotonic() > deadline:
                    raise RuntimeError("no monitor_tamper verdict within 30 s")
                time.sleep(0.002)
            seen = time.time()
            times.append(seen - float((s.workspace / "stamp").read_text().split()[0]))
    return summary_ms(times)


def bench_disk(state) -> dict:
    limit = 64 * 2**20

    def free() -> int:
        st = os.statvfs(state)
        return st.f_bavail * st.f_frsize
    with _disk_session(state, limit) as s:
        before = free()
        s.exec("fallocate -l 3G /workspace/big; head -c 3G /dev/zero > /workspace/big")
        kept = (s.workspace / "big").stat().st_size
        after = free()
    return {"limit_bytes": limit, "asked_bytes": 3 * 2**30, "kept_bytes": kept,
            "host_free_drop_bytes": before - after}


def _disk_session(state, limit: int):
    from bastion import Policy
    return Session(Policy.from_dict({"sandbox": {"limits": {"disk": limit}}}), state_dir=state)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--creates", type=int, default=60)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--idle", type=int, default=500)
    ap.add_argument("--tamper", type=int, default=0, help="supervisor-tamper trials")
    ap.add_argument("--disk", action="store_true", help="measure the disk limit")
    args = ap.parse_args()
    state = bench_state_dir()
    Host.for_state_dir(state)  # one-time host setup is not part of a session's cost
    Session(state_dir=state).close()
    results = {
        "create": bench_create(state, args.creates),
        "calls": bench_calls(state, args.calls),
        "idle": bench_idle(state, args.idle),
    }
    if args.tamper:
        results["supervisor_tamper_to_verdict"] = bench_tamper(state, args.tamper)
    if args.disk:
        results["disk_limit"] = bench_disk(state)
    emit("session", results)
    shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
