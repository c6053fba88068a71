"""Gateway figures, each measured beside its baseline in the same run.

* per-session network attach (namespace + veth + nft), p50/p99;
* added connect latency: a fresh TCP connection + one small HTTP exchange, p50/p99,
  through the gateway vs a direct connection, and vs proxy.py and mitmproxy;
* bulk throughput of one 128 MiB download (curl, median of 3), same four paths;
* bulk upload (a POST of half the download's size) through the gateway, whose every
  byte goes through whole-stream inspection, vs direct, in interleaved pairs;
* DNS answer latency: a query for an allowed name answered by the gateway (which
  rebuilds it and forwards it to the lab's server) vs the lab's server asked directly;
* ``--tls``: an HTTPS bulk download from the lab's web server (curl, ``/bytes/N``)
  through a session whose TLS the gateway terminates and inspects
  (``network.tls_inspect``) vs one where it stays opaque (``inspect: false``: spliced),
  vs direct from the lab's namespace, interleaved rounds, median;
* the inspection pass alone (``stream.Inspector`` over the upload's bytes in the relay's
  256 KiB reads, an HTTP body) vs the five ``in`` tests it replaced and vs a plain copy
  of each read, in this process: what inspection costs per byte, apart from the relay.

Everything happens inside namespaces this script creates (its own lab, "bstbn<pid>"), on
the documentation ranges. The clients run as separate processes (a Python loop for
latency, curl for throughput) in the namespace of the path being measured: the lab's own
namespace for "direct" and the proxies, a real session's namespace for the gateway.
proxy.py and mitmproxy are looked for in $BASTION_BENCH_VENV (default
/var/tmp/bastion-bench-venv: ``python3 -m venv ... && pip install proxy.py mitmproxy``;
kept out of the project venv because mitmproxy pins an older ``cryptography``) and on
PATH; if absent the row says so.

Run: ``sudo .venv/bin/python benchmarks/bench_gateway.py [--quick]``; ``--profile N``
instead times each stage of N gateway connects (perf_counter_ns spans) and the CPU each
thread of the process spends per connection, to show where the added latency goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bastion import Policy, Session
from bastion.gateway.netns import inside
from bastion.gateway.plumbing import SessionLink
from bastion.gateway.server import Gateway
from bastion.gateway.stream import Inspector
from bastion.lab import Lab
from bastion.lab.topology import DNS_IP, host

WEB_IP = host("allowed").ip
BULK_PORT = 9000
BULK_SERVER = r"""
import os, socket, sys, threading
zero = sys.argv[1]
fd = os.open(zero, os.O_RDONLY)
size = os.fstat(fd).st_size
def serve(conn):
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        path = data.split(b" ", 2)[1].decode()
        n = int(path.rsplit("/", 1)[1])
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n" % n)
        if n <= 65536:  # small replies in one segment: measure the path, not Nagle
            conn.sendall(head + b"x" * n)
            return
        conn.sendall(head)
        sent = 0
        while sent < n:
            sent += os.sendfile(conn.fileno(), fd, sent % size, min(n - sent, size - sent % size))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], int(sys.argv[3]))); s.listen(512)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""
UPLOAD_SERVER = r"""
import socket, sys, threading
def serve(conn):
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        size = int([l.split(b":")[1] for l in head.split(b"\r\n")
                    if l.lower().startswith(b"content-length")][0])
        got = len(body)
        while got < size:
            chunk = conn.recv(1 << 20)
            if not chunk:
                return
            got += len(chunk)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""
DNS_CLIENT = r"""
import json, os, socket, struct, sys, time
server, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = []
for i in range(count + 10):
    q = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    t = time.perf_counter()
    s.sendto(q, (server, 53))
    s.recv(512)
    if i >= 10:
        out.append(time.perf_counter() - t)
    s.close()
print(json.dumps(out))
"""
UPLOAD_PORT = 9001
LATENCY_CLIENT = r"""
import json, socket, sys, time
host, port, target, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
           % (target, sys.argv[5], 9000)).encode()
out = []
for i in range(count + 20):
    t = time.perf_counter()
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(request)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    assert b" 200 " in data.split(b"\r\n", 1)[0], data[:200]
    if i >= 20:
        out.append(time.perf_counter() - t)
print(json.dumps(out))
"""


def _run_in(netns: str, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    with inside(netns):
        return subprocess.run(argv, capture_output=True, text=True, check=True, **kw)


def _spawn_in(netns: str, argv: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen[str]:
    with inside(netns):
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, start_new_session=True)


def _wait_port(netns: str, address: str, port: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with inside(netns):
            probe = socket.socket()
        try:
            probe.settimeout(0.2)
            probe.connect((address, port))
            return True
        except OSError:
            time.sleep(0.1)
        finally:
            probe.close()
    return False


def _tool(name: str) -> str | None:
    venv = Path(os.environ.get("BASTION_BENCH_VENV", "/var/tmp/bastion-bench-venv"))
    candidate = venv / "bin" / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def inspection_pass(data: bytes, rounds: int = 5) -> dict[str, float]:
    """MB/s of the inspector over ``data`` in 256 KiB reads (an HTTP POST body), of the
    five ``in`` tests the scan used before its one multi-pattern pass, and of a copy of
    each read: medians of ``rounds``, interleaved."""
    chunk = 256 * 1024
    reads = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    head = (b"POST /up HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Length: %d\r\n\r\n"
            % len(data))

    def inspector() -> None:
        inspect = Inspector(http=True)
        assert inspect.feed(head) is None
        for read in reads:
            assert inspect.feed(read) is None

    def five_in_tests() -> None:
        tail = b""
        for read in reads:
            window = tail + read
            tail = window[-512:]
            _ = (b"\\u00" in window or b'"method"' in window or b"SSH-" in window
                 or b"CONNECT" in window or b"connect" in window)

    def copy() -> None:
        for read in reads:
            bytearray(read)

    speeds: dict[str, list[float]] = {"inspector": [], "five in tests": [], "copy": []}
    for _ in range(rounds):
        for name, fn in (("inspector", inspector), ("five in tests", five_in_tests),
                         ("copy", copy)):
            start = time.perf_counter()
            fn()
            speeds[name].append(len(data) / (time.perf_counter() - start) / 1e6)
    return {name: statistics.median(values) for name, values in speeds.items()}


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process's threads, by Python thread name
    (numbers stripped: a pool's threads summed)."""
    import re
    import threading

    names = {t.native_id: re.sub(r"[-_]?\d+$", "", t.name) for t in threading.enumerate()}
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def profile_connects(session_ns: str, count: int) -> None:
    """Where a connection's time goes on the gateway: each stage of the connect path
    wrapped with a perf_counter_ns span (medians per connection), the latency client's
    own p50 beside the direct path's, and the CPU each thread of this process spent per
    connection. Spans are wall time on a loaded machine: read them relatively.
    BENCH_CPROFILE=1 adds cProfile of the gateway loop's thread (by internal time)."""
    import asyncio
    import functools
    import threading

    from bastion.gateway import decide as decide_mod
    from bastion.gateway import owner as owner_mod
    from bastion.gateway import server as server_mod
    from bastion.gateway import upstream as upstream_mod

    spans: dict[str, list[int]] = {}

    def timed(owner: object, attr: str, label: str) -> None:
        fn = getattr(owner, attr)
        if asyncio.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def wrapper(*a: object, **kw: object) -> object:
                start = time.perf_counter_ns()
                try:
                    return await fn(*a, **kw)
                finally:
                    spans.setdefault(label, []).append(time.perf_counter_ns() - start)
        else:
            @functools.wraps(fn)
            def wrapper(*a: object, **kw: object) -> object:  # type: ignore[misc]
                start = time.perf_counter_ns()
                try:
                    return fn(*a, **kw)
                finally:
                    spans.setdefault(label, []).append(time.perf_counter_ns() - start)
        setattr(owner, attr, wrapper)

    for owner, attr, label in (
            (server_mod.Gateway, "_handle", "handle (accept to relay started)"),
            (owner_mod.Owners, "lookup", "owner lookup"),
            (server_mod.Gateway, "_peek", "peek + classify"),
            (server_mod, "decide", "decide"),
            (server_mod, "reachable", "reachable"),
            (server_mod.Attachment, "judged_key", "judged key"),
            (server_mod.Attachment, "submit", "submit (make_event + hand-off)"),
            (server_mod.Attachment, "decide", "awaited decide"),
            (upstream_mod.Upstream, "connect", "upstream connect"),
            (server_mod.Gateway, "_start_relay", "relay start (+ first send)")):
        timed(owner, attr, label)
    del decide_mod
    profiler = None
    if os.environ.get("BENCH_CPROFILE"):  # the gateway loop's own functions, by tottime
        import cProfile

        profiler = cProfile.Profile()
        loop = server_mod.Gateway.get()._loop
        loop.call_soon_threadsafe(profiler.enable)
    before = _thread_cpu()
    out = _run_in(session_ns, [sys.executable, "-c", LATENCY_CLIENT, WEB_IP, str(BULK_PORT),
                               "/64", str(count), WEB_IP], timeout=600)
    after = _thread_cpu()
    if profiler is not None:
        import pstats

        done = threading.Event()
        loop.call_soon_threadsafe(lambda: (profiler.disable(), done.set()))
        done.wait(5)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    lat = json.loads(out.stdout)
    total = count + 20
    print(f"profile: {count} connections, client p50 {pct(lat, 0.5) * 1e3:.3f} ms "
          f"p99 {pct(lat, 0.99) * 1e3:.3f} ms")
    for label, values in spans.items():
        print(f"  {label:34} n={len(values):5d} p50 {pct(values, 0.5) / 1e3:8.1f} us  "
              f"p90 {pct(values, 0.9) / 1e3:8.1f} us")
    for name in sorted(after):
        used = after[name] - before.get(name, 0.0)
        if used > 0:
            print(f"  cpu {name:20} {used / total * 1e3:7.3f} ms/connection")


def tls_bulk(lab: Lab, state: Path, size: int, runs: int) -> dict[str, float]:
    """MB/s of an HTTPS download of ``size`` bytes: inspected, opaque, direct."""
    from bastion.gateway.intercept import authority

    def policy(inspect: bool) -> Policy:
        return Policy.from_dict({"name": "bench-tls", "rules": {"packs": []}, "network": {
            "tls_inspect": True, "phases": {"agent": {"allow": [
                {"domain": "allowed.lab.test", "inspect": inspect}]}}}})

    trust = lab.ca_path.read_text() + authority().pem
    sessions = {"inspected": Session(policy(True), state_dir=state, lab=True),
                "opaque (spliced)": Session(policy(False), state_dir=state, lab=True)}
    speeds: dict[str, list[float]] = {name: [] for name in [*sessions, "direct"]}
    url = f"https://allowed.lab.test/bytes/{size}"
    curl = ["curl", "-sS", "-o", "/dev/null", "-m", "300", "-w", "%{speed_download}"]
    try:
        for s in sessions.values():
            s.write_file("/workspace/ca.pem", trust)
        for _ in range(runs):
            for name, s in sessions.items():
                r = s.exec([*curl, "--cacert", "/workspace/ca.pem", url], timeout=320)
                with contextlib.suppress(ValueError):
                    speeds[name].append(float(r.stdout))
            out = _run_in(lab.netns_path, [*curl, "--cacert", str(lab.ca_path), "--resolve",
                                           f"allowed.lab.test:443:{WEB_IP}", url], timeout=320)
            with contextlib.suppress(ValueError):
                speeds["direct"].append(float(out.stdout))
    finally:
        for s in sessions.values():
            s.close()
    return {name: statistics.median(v) / 1e6 if v else float("nan")
            for name, v in speeds.items()}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="only profile N gateway connects (stage spans, thread CPU)")
    parser.add_argument("--tls", action="store_true",
                        help="only the HTTPS download, inspected vs opaque vs direct")
    args = parser.parse_args()
    count = 100 if args.quick else 400
    bulk = (64 if args.quick else 128) * 1024 * 1024
    runs = 2 if args.quick else 3

    # a lab of this run's own (another run's teardown must not take this one's away)
    name = f"bstbn{os.getpid() % 1000000}"
    os.environ["BASTION_LAB"] = name
    lab = Lab(name).up()
    state = Path(tempfile.mkdtemp(prefix="bastion-bench-", dir="/var/tmp"))
    os.chmod(state, 0o711)
    zero = state / "zero.bin"
    zero.write_bytes(b"\0" * (16 * 1024 * 1024))
    upload_file = state / "upload.bin"
    upload_file.write_bytes(os.urandom(bulk // 2))
    procs: list[subprocess.Popen[str]] = []
    session: Session | None = None
    try:
        server = _spawn_in(lab.netns_path, [sys.executable, "-c", BULK_SERVER, str(zero),
                                            WEB_IP, str(BULK_PORT)])
        procs.append(server)
        assert _wait_port(lab.netns_path, WEB_IP, BULK_PORT)
        procs.append(_spawn_in(lab.netns_path, [sys.executable, "-c", UPLOAD_SERVER, WEB_IP,
                                                str(UPLOAD_PORT)]))
        assert _wait_port(lab.netns_path, WEB_IP, UPLOAD_PORT)

        if args.tls:
            size = (64 if args.quick else 200) * 1000 * 1000
            figures = tls_bulk(lab, state, size, runs)
            print(f"HTTPS download of {size // 1000000} MB (curl, median of {runs}):")
            for name, mbps in figures.items():
                print(f"  {name:18} {mbps:8.1f} MB/s  ({mbps / figures['direct']:.2f}x direct)")
            print("JSON " + json.dumps({"tls_bulk_mbps": figures}))
            return 0

        # -- attach cost ----------------------------------------------------------------
        gateway = Gateway.get()
        attach: list[float] = []
        for i in range(50):
            start = time.perf_counter()
            link = SessionLink(gateway.slot, 1000 + i % 10, f"bst-bench-{os.getpid()}-{i}")
            attach.append(time.perf_counter() - start)
            link.close()
            time.sleep(0.02)  # let the kernel finish destroying the previous veth
        policy = Policy.from_dict({"name": "bench", "network": {"phases": {"agent": {
            "allow": [{"cidr": f"{WEB_IP}/32"}, {"domain": "allowed.lab.test"}]}}}})
        creates: list[float] = []
        for _ in range(10):
            start = time.perf_counter()
            Session(policy, state_dir=state, lab=True).close()
            creates.append(time.perf_counter() - start)
        session = Session(policy, state_dir=state, lab=True)
        session_ns = session._network.netns_path  # type: ignore[union-attr]
        if args.profile:
            direct = json.loads(_run_in(
                lab.netns_path, [sys.executable, "-c", LATENCY_CLIENT, WEB_IP, str(BULK_PORT),
                                 "/64", str(args.profile), WEB_IP], timeout=300).stdout)
            print(f"direct p50 {pct(direct, 0.5) * 1e3:.3f} ms (same run, before)")
            profile_connects(session_ns, args.profile)
            return 0

        # -- the four paths ---------------------------------------------------------------
        paths: dict[str, tuple[str, str, int, str]] = {
            "direct": (lab.netns_path, WEB_IP, BULK_PORT, "/"),
            "bastion gateway": (session_ns, WEB_IP, BULK_PORT, "/"),
        }
        attachment = session._network  # type: ignore[union-attr]
        notes: list[str] = []
        proxy_py = _tool("proxy")
        if proxy_py:
            procs.append(_spawn_in(lab.netns_path, [
                proxy_py, "--hostname", "127.0.0.1", "--port", "8899", "--num-workers", "2",
                "--log-level", "ERROR"]))
            if _wait_port(lab.netns_path, "127.0.0.1", 8899):
                paths["proxy.py"] = (lab.netns_path, "127.0.0.1", 8899,
                                     f"http://{WEB_IP}:{BULK_PORT}/")
            else:
                notes.append("proxy.py did not start")
        else:
            notes.append("proxy.py is not installed (pip install proxy.py into "
                         "$BASTION_BENCH_VENV)")
        mitmdump = _tool("mitmdump")
        if mitmdump:
            home = state / "mitm"
            home.mkdir()
            procs.append(_spawn_in(lab.netns_path, [
                mitmdump, "-q", "--listen-host", "127.0.0.1", "--listen-port", "8898",
                "--set", "stream_large_bodies=1m", "--set", f"confdir={home}"],
                env={**os.environ, "HOME": str(home)}))
            if _wait_port(lab.netns_path, "127.0.0.1", 8898):
                paths["mitmproxy"] = (lab.netns_path, "127.0.0.1", 8898,
                                      f"http://{WEB_IP}:{BULK_PORT}/")
            else:
                notes.append("mitmproxy did not start")
        else:
            notes.append("mitmproxy is not installed (pip install mitmproxy into "
                         "$BASTION_BENCH_VENV)")

        # latency: paths interleaved in rounds, so drift in machine load hits all alike
        # ("every connect awaited": the gateway with remembered judgements off, the
        # round trip to the session's executor on each connection, as before them)
        # ("upstream as before": the upstream connect awaited through the loop and the
        # lab namespace's identity checked on every connect, as before stop 4)
        awaited = "gateway, every connect awaited"
        old_dial = "gateway, upstream dialled as before"
        latencies: dict[str, list[float]] = {name: [] for name in [*paths, awaited, old_dial]}
        for _ in range(4):
            for name, (netns, address, port, prefix) in [
                    *paths.items(), (awaited, paths["bastion gateway"]),
                    (old_dial, paths["bastion gateway"])]:
                attachment.remember = name != awaited
                attachment.upstream.poll_first = name != old_dial
                attachment.upstream.recheck = 0.0 if name == old_dial else 1.0
                out = _run_in(netns, [sys.executable, "-c", LATENCY_CLIENT, address, str(port),
                                      f"{prefix}64", str(count // 4), WEB_IP], timeout=300)
                latencies[name] += json.loads(out.stdout)
        attachment.remember = True
        attachment.upstream.poll_first, attachment.upstream.recheck = True, 1.0
        results: dict[str, dict[str, float]] = {}
        for name, (netns, address, port, prefix) in paths.items():
            lat = latencies[name]
            speeds = []
            for _ in range(runs):
                curl = ["curl", "-sS", "-o", "/dev/null", "-m", "120", "-w", "%{speed_download}"]
                if prefix != "/":
                    curl += ["-x", f"http://{address}:{port}"]
                curl.append(f"http://{WEB_IP}:{BULK_PORT}/{bulk}")
                try:
                    speeds.append(float(_run_in(netns, curl, timeout=150).stdout))
                except (subprocess.SubprocessError, ValueError) as exc:
                    notes.append(f"{name}: a {bulk >> 20} MiB transfer failed ({exc})")
            if not speeds:
                speeds = [float("nan")]
            results[name] = {"p50": pct(lat, 0.5) * 1e3, "p99": pct(lat, 0.99) * 1e3,
                             "mbps": statistics.median(speeds) / 1e6}

        # -- upload (inspected) and DNS ---------------------------------------------------
        # uploads interleaved in pairs (direct, then gateway), more rounds than the
        # downloads: one upload is short and the shared machine's noise is not
        up_paths = (("direct", lab.netns_path), ("bastion gateway", session_ns))
        up_speeds: dict[str, list[float]] = {name: [] for name, _ in up_paths}
        pair_ratios: list[float] = []
        for _ in range(runs * 3):
            pair: dict[str, float] = {}
            for name, netns in up_paths:
                curl = ["curl", "-sS", "-o", "/dev/null", "-m", "120", "-w", "%{speed_upload}",
                        "-H", "Content-Type: application/octet-stream",
                        "-H", "Expect:",  # no 100-continue wait: measure the bytes
                        "--data-binary",
                        f"@{upload_file}", f"http://{WEB_IP}:{UPLOAD_PORT}/up"]
                try:
                    pair[name] = float(_run_in(netns, curl, timeout=150).stdout)
                    up_speeds[name].append(pair[name])
                except (subprocess.SubprocessError, ValueError) as exc:
                    notes.append(f"upload {name} failed ({exc})")
            if len(pair) == 2 and pair["direct"] > 0:
                pair_ratios.append(pair["bastion gateway"] / pair["direct"])
        upload = {name: statistics.median(v) / 1e6 if v else float("nan")
                  for name, v in up_speeds.items()}
        upload_pair_ratio = statistics.median(pair_ratios) if pair_ratios else float("nan")
        dns: dict[str, list[float]] = {"direct": [], "bastion gateway": []}
        for _ in range(4):
            for name, netns in (("direct", lab.netns_path), ("bastion gateway", session_ns)):
                out = _run_in(netns, [sys.executable, "-c", DNS_CLIENT, DNS_IP,
                                      "allowed.lab.test", str(count // 4)], timeout=300)
                dns[name] += json.loads(out.stdout)

        scan = inspection_pass(upload_file.read_bytes())

        # -- report -----------------------------------------------------------------------
        base = results["direct"]
        gw = results["bastion gateway"]
        slow = latencies[awaited]
        print(f"gateway benchmark ({count} connections per path, {bulk >> 20} MiB x {runs} "
              f"bulk, median)")
        print(f"{'path':18} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10} "
              f"{'MB/s':>9} {'x direct':>9} {'gw x this':>10}")
        for name, r in results.items():
            print(f"{name:18} {r['p50']:8.3f} {r['p99']:8.3f} {r['p50'] - base['p50']:10.3f} "
                  f"{r['p99'] - base['p99']:10.3f} {r['mbps']:9.1f} "
                  f"{r['mbps'] / base['mbps']:9.2f} {gw['mbps'] / r['mbps']:10.2f}")
        for label in (awaited, old_dial):
            values = latencies[label]
            print(f"{label}: p50 {pct(values, 0.5) * 1e3:.3f} ms, p99 "
                  f"{pct(values, 0.99) * 1e3:.3f} ms (added p50 "
                  f"{pct(values, 0.5) * 1e3 - base['p50']:.3f} ms)")
        print(f"network attach per session: p50 {pct(attach, 0.5) * 1e3:.2f} ms, "
              f"p99 {pct(attach, 0.99) * 1e3:.2f} ms; "
              f"whole session create (sandbox + network), p50 "
              f"{pct(creates, 0.5) * 1e3:.1f} ms")
        print(f"bulk upload through whole-stream inspection: {upload['bastion gateway']:.1f} "
              f"MB/s vs direct {upload['direct']:.1f} MB/s "
              f"({upload['bastion gateway'] / upload['direct']:.2f}x; median of "
              f"{len(pair_ratios)} interleaved pairs {upload_pair_ratio:.2f}x)")
        print(f"DNS answer (allowed name): gateway p50 {pct(dns['bastion gateway'], 0.5) * 1e3:.3f}"
              f" ms, p99 {pct(dns['bastion gateway'], 0.99) * 1e3:.3f} ms; lab server direct p50 "
              f"{pct(dns['direct'], 0.5) * 1e3:.3f} ms")
        print(f"inspection pass alone (256 KiB reads of the upload, HTTP body): "
              f"{scan['inspector']:.0f} MB/s; five 'in' tests (before) "
              f"{scan['five in tests']:.0f} MB/s; copy of each read {scan['copy']:.0f} MB/s")
        for note in notes:
            print("note:", note)
        print("JSON " + json.dumps({"paths": results, "upload_mbps": upload,
                                    "awaited_ms": {"p50": pct(slow, 0.5) * 1e3,
                                                   "p99": pct(slow, 0.99) * 1e3},
                                    "old_dial_ms": {
                                        "p50": pct(latencies[old_dial], 0.5) * 1e3,
                                        "p99": pct(latencies[old_dial], 0.99) * 1e3},
                                    "upload_pair_ratio": upload_pair_ratio,
                                    "dns_ms": {k: {"p50": pct(v, 0.5) * 1e3,
                                                   "p99": pct(v, 0.99) * 1e3}
                                               for k, v in dns.items()},
                                    "attach_ms": {"p50": pct(attach, 0.5) * 1e3,
                                                  "p99": pct(attach, 0.99) * 1e3},
                                    "session_create_p50_ms": pct(creates, 0.5) * 1e3,
                                    "inspection_pass_mbps": scan}))
    finally:
        if session is not None:
            session.close()
        for proc in procs:
            with contextlib.suppress(Exception):
                os.killpg(proc.pid, 15)
            with contextlib.suppress(Exception):
                proc.wait(5)
        lab.down()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
