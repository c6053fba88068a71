"""`bastion serve` under load, on loopback, and what it costs the sessions.

    python benchmarks/bench_serve.py [--sessions 64] [--pollers 50] [--followers 10]
                                     [--seconds 20] [--calls-per-s 2] [--exec-calls 200]

Part A (load): `bastion serve` runs as its own process over a fresh state directory.
``--sessions`` writers (threads of this process, each one "live session" with its own
episode, four runs) append what a session records per tool call — call_start,
command, exec, a connection, a DNS answer, call_end, and on every fifth call a verdict
and an action — through the audit trail's own writer (queued appends, one group commit
per batch, as sessions do), ``--calls-per-s`` calls per session per second. Meanwhile,
in another process, ``--pollers`` clients poll the API (episodes, verdicts, runs,
audit, /metrics, events) with 0.5 s between requests and ``--followers`` clients
follow the SSE stream of verdicts. Figures: API latency p50/p99, records/s written,
verdicts written vs received by each follower (dropped must be 0, and the server's
own dropped counter too), stream delivery latency (verdict wall clock -> received).

Part B (cost to the sessions): p50 of `Session.exec("true")` on one real session, in
alternating blocks with and without the server (and the same clients) running over
its state directory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import psutil
from _common import bench_state_dir, emit, pct, summary_ms

from bastion import Action, Event, EventKind, Policy, Session, Severity, Verdict
from bastion.audit import TrailConfig, open_trail

TOKEN = "bst_bench-admin-token"
PATHS = ["/api/v1/episodes?state=live", "/api/v1/verdicts?limit=50", "/api/v1/runs",
         "/api/v1/audit", "/metrics", "/api/v1/events?limit=50&kind=net.connect",
         "/api/v1/stats/steps"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(state: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "--port", str(port), "--state-dir",
         str(state), "--verify-interval", "30"],
        env={**os.environ, "BASTION_ADMIN_TOKEN": TOKEN}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("bastion serve did not start: " + (proc.stderr.read() if proc.stderr
                                                            else ""))


def stop_server(proc: subprocess.Popen[str]) -> str:
    """Stop the server; return what it wrote on stderr."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err or ""


# -- clients (another process) -------------------------------------------------------------


def clients_main(url: str, pollers: int, followers: int, stop: Any, drain: float,
                 out: mp.Queue, expected: Any, ready: Any) -> None:  # type: ignore[type-arg]
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    ends: list[str] = []
    received: list[dict[str, float]] = [{} for _ in range(followers)]
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def poll(i: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            n = i
            while time.time() < stop.value:
                path = PATHS[n % len(PATHS)]
                n += 1
                t = time.perf_counter()
                try:
                    r = c.get(path)
                    ok = r.status_code == 200
                except httpx.HTTPError as exc:
                    ok, r = False, None
                    errors.append(f"{path}: {exc}")
                with lock:
                    latencies.append(time.perf_counter() - t)
                    if not ok and r is not None:
                        errors.append(f"{path}: {r.status_code}")
                time.sleep(0.5)

    def follow(i: int) -> None:
        """Until every verdict written arrived (``expected`` is set once the writers
        have stopped), or ``drain`` seconds after they stopped (the server's pings,
        every 10 s, wake the loop)."""
        try:
            if _follow(i):
                return
            errors.append(f"follower {i}: the server ended the stream at "
                          f"{time.time() - stop.value:+.1f} s")
        except httpx.HTTPError as exc:
            errors.append(f"follower {i}: {type(exc).__name__} at "
                          f"{time.time() - stop.value:+.1f} s: {exc}")

    def _follow(i: int) -> bool:
        seen = received[i]
        with httpx.Client(base_url=url, headers=headers,
                          timeout=httpx.Timeout(10, read=30)) as c, \
                c.stream("GET", "/api/v1/stream", params={"types": "verdict"}) as r:
            event = ""
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                    if event == "hello":  # subscribed: the writers may start
                        with ready.get_lock():
                            ready.value += 1
                elif line.startswith("data:") and event == "verdict":
                    data = json.loads(line[5:])
                    seen[data["id"]] = time.time() - data["wall"]
                elif line.startswith("data:") and event == "dropped":
                    errors.append(f"follower {i} dropped")
                now = time.time()
                if 0 <= expected.value <= len(seen) or now > stop.value + drain:
                    ends.append(f"follower {i}: {len(seen)}/{expected.value} at "
                                f"{now - stop.value:+.1f} s")
                    return True
        ends.append(f"follower {i}: stream ended, {len(seen)}/{expected.value} at "
                    f"{time.time() - stop.value:+.1f} s")
        return False

    threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(followers)]
    threads += [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(pollers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, stop.value + drain + 30 - time.time()))
    out.put({"latencies": latencies, "errors": errors[:20], "n_errors": len(errors),
             "received": received, "ends": ends})


# -- writers ("live sessions") -------------------------------------------------------------


def writer(state: Path, index: int, rate: float, stop_at: float, counts: list[int],
           verdict_ids: set[str], lock: threading.Lock) -> None:
    run = f"bench-run-{index % 4}"
    episode, session = f"ep-{index}", f"s-bench-{index}"
    (state / "sessions" / session).mkdir(parents=True, exist_ok=True)  # "still running"
    trail = open_trail(state, run, config=TrailConfig(durable_appends=False))
    policy = Policy.default()
    trail.append_policy(policy, episode_id=episode)

    def ev(kind: EventKind, step: int | None = None, **fields: object) -> Event:
        return Event(kind, session_id=session, run_id=run, episode_id=episode, step=step,
                     call_id=None if step is None else f"c{step}", pid=1000, fields=fields)

    trail.append_event(ev(EventKind.LIFECYCLE, **{"life.state": "created",
                                                   "policy": policy.name}))
    step, written = 0, 1
    next_at = time.time()
    while time.time() < stop_at:
        bad = step % 5 == 4
        batch = [ev(EventKind.LIFECYCLE, step, **{"life.state": "call_start",
                                                   "cmd.raw": "python3 solve.py"}),
                 ev(EventKind.COMMAND, step, **{"cmd.raw": "python3 solve.py"}),
                 ev(EventKind.EXEC, step, **{"proc.name": "python3"}),
                 ev(EventKind.NET_CONNECT, step, **{"net.decision": "deny" if bad else "allow",
                                                     "net.dst_ip": "203.0.113.5",
                                                     "net.dst_port": 443}),
                 ev(EventKind.DNS_QUERY, step, **{"dns.decision": "allow", "dns.rcode": "NOERROR",
                                                   "dns.name": "pypi.org"})]
        trail.submit_events(batch)
        written += len(batch)
        if bad:
            v = Verdict("bench.rule", Severity.HIGH, "bench", action=Action.KILL,
                        categories=("bench",), session_id=session, run_id=run,
                        episode_id=episode, step=step, call_id=f"c{step}")
            trail.submit_verdict(v)
            trail.submit_event(ev(EventKind.ACTION, step, **{"action.name": "kill",
                                                              "action.ok": True}))
            written += 2
            with lock:
                verdict_ids.add(v.id)
        trail.submit_event(ev(EventKind.LIFECYCLE, step, **{"life.state": "call_end",
                                                             "outcome": "killed" if bad
                                                             else "ok"}))
        written += 1
        trail.flush()
        step += 1
        next_at += 1.0 / rate
        time.sleep(max(0.0, next_at - time.time()))
    trail.flush()
    with lock:
        counts.append(written)


def part_a(args: argparse.Namespace) -> dict[str, object]:
    state = bench_state_dir()
    port = free_port()
    server = start_server(state, port)
    url = f"http://127.0.0.1:{port}"
    stop = mp.get_context("spawn").Value("d", time.time() + 3600)  # set once all are ready
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    expected = ctx.Value("i", -1)
    ready = ctx.Value("i", 0)
    # pollers and followers in processes of their own, so a client's own GIL does not
    # pass for the server's latency
    clients = [ctx.Process(target=clients_main, args=(url, pollers, followers, stop,
                                                      120.0, out, expected, ready))
               for pollers, followers in ((args.pollers, 0), (0, args.followers))]
    for c in clients:
        c.start()
    # the stream does not replay the past: every follower must be subscribed before
    # the first record is written (starting a process can take seconds on a busy host)
    deadline = time.time() + 120
    while ready.value < args.followers and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    stop_at = stop.value = time.time() + args.seconds
    server_ps = psutil.Process(server.pid)
    cpu_before = server_ps.cpu_times()
    counts: list[int] = []
    verdict_ids: set[str] = set()
    lock = threading.Lock()
    started = time.time()
    writers = [threading.Thread(target=writer, args=(state, i, args.calls_per_s, stop_at,
                                                     counts, verdict_ids, lock))
               for i in range(args.sessions)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    elapsed = time.time() - started
    expected.value = len(verdict_ids)
    cpu_after = server_ps.cpu_times()
    server_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    parts = [out.get(timeout=args.seconds + 300) for _ in clients]
    for c in clients:
        c.join(timeout=30)
    result = {"latencies": [x for r in parts for x in r["latencies"]],
              "errors": [e for r in parts for e in r["errors"]],
              "n_errors": sum(r["n_errors"] for r in parts),
              "received": [x for r in parts for x in r["received"]],
              "ends": [x for r in parts for x in r["ends"]]}
    import httpx

    metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=30).text
    def counter(name: str) -> float:
        return next((float(line.split()[-1]) for line in metrics.splitlines()
                     if line.startswith(name + " ")), -1.0)
    server_stderr = stop_server(server)
    received = result["received"]
    missing = [len(verdict_ids - set(r)) for r in received]
    delivery = [lat for r in received for vid, lat in r.items() if vid in verdict_ids]
    return {
        "sessions": args.sessions, "pollers": args.pollers, "followers": args.followers,
        "seconds": round(elapsed, 1),
        "records_written": sum(counts),
        "records_per_s": round(sum(counts) / elapsed, 1),
        "api": summary_ms(result["latencies"]),
        "api_requests_per_s": round(len(result["latencies"]) / elapsed, 1),
        "server_cpu_seconds": round(server_cpu, 2),
        "server_cpu_share_of_one_core": round(server_cpu / elapsed, 3),
        "load_average_1m": os.getloadavg()[0],
        "api_errors": result["n_errors"], "api_error_samples": result["errors"],
        "verdicts_written": len(verdict_ids),
        "verdicts_missed_per_follower": missing,
        "stream_dropped_server_counter": counter("bastion_serve_stream_dropped_total"),
        "stream_undelivered_server_counter": counter(
            "bastion_serve_stream_undelivered_total"),
        "stream_delivery": summary_ms(delivery) if delivery else None,
        "followers_ended": result["ends"],
        "server_stderr_tail": server_stderr[-2000:],
    }


# -- part B -----------------------------------------------------------------------------------


def part_b(args: argparse.Namespace) -> dict[str, object]:
    state = bench_state_dir()
    without: list[float] = []
    with_server: list[float] = []
    block = max(10, args.exec_calls // 4)
    with Session(run_id="bench-exec", episode_id="ep-exec", state_dir=state) as s:
        for _ in range(20):
            s.exec("true")
        for round_ in range(4):
            server = clients = None
            if round_ % 2 == 1:
                port = free_port()
                server = start_server(state, port)
                stop_at = time.time() + 3600
                spawn = mp.get_context("spawn")
                out: mp.Queue = spawn.Queue()  # type: ignore[type-arg]
                # kept referenced until the child has read them (start() drops its own
                # references, and a collected Value's semaphore is gone for the child)
                shared = (spawn.Value("d", stop_at), spawn.Value("i", -1), spawn.Value("i", 0))
                clients = spawn.Process(
                    target=clients_main, args=(f"http://127.0.0.1:{port}", args.pollers,
                                               args.followers, shared[0], 0.0, out,
                                               shared[1], shared[2]), daemon=True)
                clients.start()
                time.sleep(3)
            samples = with_server if server else without
            for _ in range(block):
                t = time.perf_counter()
                s.exec("true")
                samples.append(time.perf_counter() - t)
            if clients is not None:
                clients.terminate()
                clients.join()
            if server is not None:
                stop_server(server)
    p50_without, p50_with = pct(without, 50), pct(with_server, 50)
    return {"exec_without_server": summary_ms(without),
            "exec_with_server_and_clients": summary_ms(with_server),
            "p50_ratio": round(p50_with / p50_without, 3),
            "p50_added_ms": round(1000 * (p50_with - p50_without), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--followers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--calls-per-s", type=float, default=2.0)
    parser.add_argument("--exec-calls", type=int, default=200)
    parser.add_argument("--skip-b", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {"load": part_a(args)}
    if not args.skip_b:
        results["session_cost"] = part_b(args)
    results["command"] = " ".join(["python", "benchmarks/bench_serve.py", *sys.argv[1:]])
    emit("serve", results)


if __name__ == "__main__":
    main()
