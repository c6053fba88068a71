"""Audit trail: durable append throughput and latency beside plain SQLite inserts with
the same durability, verify throughput, and the checkpoint export interval under load.

    python benchmarks/bench_audit.py [--records 200000] [--batch 1000] [--rounds 3]

Both sides get the same prebuilt Events, the same SQLite settings (WAL,
synchronous=FULL, a real disk under /var/tmp) and the same number of records per
transaction. The baseline serialises each event to JSON with the trail's own encoder
and INSERTs it: that is "a log in SQLite" without the chain, so the ratio isolates
what the chain, the writer thread and the checkpoints cost. The trail adds the canonical encoding, two SHA-256
per record, the position lookup inside BEGIN IMMEDIATE, the episode index and signed
checkpoints (every 10,000 records, exported to the directory sink), and hands records
through its writer thread. Figures are medians over rounds; the baseline and the trail
alternate within each round so both see the same machine load.

Latency: one producer calling ``append_event`` (returns once durable) beside a plain
one-row INSERT + COMMIT; then 8 producer threads appending at once (group commit).
Verify: ``verify_run`` on the appended log (quick_check, every checkpoint signature,
the whole chain), with one process and with one per core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import orjson
from _common import bench_state_dir, emit, summary_ms

from bastion.audit import AuditTrail, TrailConfig
from bastion.audit.trail import _event_data
from bastion.audit.verify import verify_run
from bastion.events import Event, EventKind
from bastion.state import StateDir


def build_events(n: int) -> list[Event]:
    events = []
    for i in range(n):
        step, pid = i % 50, 1000 + i % 4000
        attr = {"run_id": "bench", "episode_id": f"ep-{i // 5000}", "session_id": "s-bench",
                "step": step, "call_id": f"c{step}", "pid": pid, "ppid": pid - 1}
        kind = i % 5
        if kind == 0:
            events.append(Event(EventKind.EXEC, **attr, ancestry=(pid - 1, 1), fields={
                "proc.name": "python3", "proc.exe": "/usr/bin/python3",
                "proc.args": ["python3", "-m", "pytest", "-q"],
                "proc.cmdline": "python3 -m pytest -q", "proc.cwd": "/workspace"}))
        elif kind == 1:
            events.append(Event(EventKind.FORK, **attr, fields={"proc.name": "python3"}))
        elif kind == 2:
            events.append(Event(EventKind.NET_CONNECT, **attr, fields={
                "net.dst_ip": "203.0.113.7", "net.dst_port": 443, "net.proto": "tcp",
                "net.app": "tls", "net.sni": "pypi.org", "net.decision": "allow"}))
        elif kind == 3:
            events.append(Event(EventKind.RESOURCE, **attr, fields={
                "res.cpu_cores": 0.73, "res.mem_bytes": 123456789, "res.pids": 12}))
        else:
            events.append(Event(EventKind.LIFECYCLE, **attr, fields={
                "life.state": "call_end", "proc.exit_code": 0, "outcome": "ok"}))
    return events


def plain_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    return conn


def plain_append(events: list[Event], batch: int) -> float:
    root = bench_state_dir()
    try:
        conn = plain_connect(root / "plain.db")
        start = time.perf_counter()
        for k in range(0, len(events), batch):
            rows = [(orjson.dumps({"type": "event", "data": _event_data(e)},
                                  option=orjson.OPT_SORT_KEYS),)
                    for e in events[k:k + batch]]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO log (body) VALUES (?)", rows)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
        return len(events) / elapsed
    finally:
        shutil.rmtree(root, ignore_errors=True)


def trail_append(events: list[Event], batch: int, keep: bool = False
                 ) -> tuple[float, Path | None]:
    root = bench_state_dir()
    trail = AuditTrail(root, "bench", config=TrailConfig(checkpoint_every=10_000))
    start = time.perf_counter()
    ticket = None
    for k in range(0, len(events), batch):
        ticket = trail.submit_events(events[k:k + batch])
    assert ticket is not None
    ticket.wait()
    elapsed = time.perf_counter() - start
    trail.close()
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
        return len(events) / elapsed, None
    return len(events) / elapsed, root


def latency(events: list[Event], n: int) -> dict[str, dict[str, float]]:
    root = bench_state_dir()
    try:
        conn = plain_connect(root / "plain.db")
        plain = []
        for e in events[:n]:
            t = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO log (body) VALUES (?)",
                         (orjson.dumps({"type": "event", "data": _event_data(e)},
                                       option=orjson.OPT_SORT_KEYS),))
            conn.execute("COMMIT")
            plain.append(time.perf_counter() - t)
        conn.close()
        trail = AuditTrail(root, "lat")
        ours = []
        for e in events[:n]:
            t = time.perf_counter()
            trail.append_event(e)
            ours.append(time.perf_counter() - t)
        trail.close()
        return {"plain_sqlite_commit": summary_ms(plain), "trail_append_event": summary_ms(ours)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def concurrent(events: list[Event], threads: int, per_thread: int) -> dict[str, float]:
    root = bench_state_dir()
    try:
        trail = AuditTrail(root, "conc")

        def work(k: int) -> None:
            for e in events[k * per_thread:(k + 1) * per_thread]:
                trail.append_event(e)

        pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        start = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - start
        stats = trail.statistics()
        trail.close()
        return {"threads": threads, "records_per_s": round(stats.records / elapsed),
                "records_per_commit": round(stats.records / stats.batches, 1)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def checkpoint_cadence(events: list[Event], threads: int, seconds: float) -> dict[str, float]:
    """Checkpoint export interval under load: ``threads`` producers append (each append
    durable) for ``seconds``; every export to the sink is timed. The largest gap is how
    much a SIGKILL can leave protected by the chain alone."""
    from bastion.audit.sinks import DirectorySink

    root = bench_state_dir()
    exports: list[float] = []

    class TimedSink(DirectorySink):
        def publish(self, stem, checkpoint):  # type: ignore[no-untyped-def]
            super().publish(stem, checkpoint)
            exports.append(time.monotonic())

    try:
        state = StateDir.resolve(root)
        trail = AuditTrail(root, "cadence", sinks=[TimedSink(state.checkpoints)])
        stop = time.monotonic() + seconds
        done = [0] * threads

        def work(k: int) -> None:
            i = k
            while time.monotonic() < stop:
                trail.append_event(events[i % len(events)])
                done[k] += 1
                i += threads

        pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        start = time.monotonic()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        trail.close()
        during = [t for t in exports if start < t <= stop]
        gaps = [b - a for a, b in zip(during, during[1:])]
        return {"producers": threads, "seconds": seconds, "records": sum(done),
                "exports": len(during),
                "export_gap_p50_s": round(statistics.median(gaps), 3) if gaps else None,
                "export_gap_max_s": round(max(gaps), 3) if gaps else None}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def verify_rate(root: Path, workers: int) -> tuple[float, bool]:
    state = StateDir.resolve(root)
    start = time.perf_counter()
    result = verify_run(state.audit / "bench.db", state=state, workers=workers)
    elapsed = time.perf_counter() - start
    return result.records / elapsed, result.ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    events = build_events(args.records)
    plain, ours, ratio, v1, vn = [], [], [], [], []
    for _ in range(args.rounds):
        p = plain_append(events, args.batch)
        t, root = trail_append(events, args.batch, keep=True)
        plain.append(p)
        ours.append(t)
        ratio.append(t / p)
        assert root is not None
        try:
            rate1, ok1 = verify_rate(root, 1)
            raten, okn = verify_rate(root, args.workers)
            assert ok1 and okn, "the benchmark log did not verify"
            v1.append(rate1)
            vn.append(raten)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    med = statistics.median
    results = {
        "records": args.records, "batch": args.batch, "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "append_plain_sqlite_records_per_s": round(med(plain)),
        "append_trail_records_per_s": round(med(ours)),
        "append_trail_over_plain": round(med(ratio), 3),
        "verify_records_per_s_1_process": round(med(v1)),
        f"verify_records_per_s_{args.workers}_processes": round(med(vn)),
        "latency_single_producer": latency(events, 2000),
        "group_commit_8_threads": concurrent(events, 8, 1000),
        "checkpoint_export_under_load": checkpoint_cadence(events, 8, 6.0),
        "targets": {"append_records_per_s": 100_000, "verify_records_per_s": 1_000_000},
    }
    emit("audit", results)


if __name__ == "__main__":
    main()
