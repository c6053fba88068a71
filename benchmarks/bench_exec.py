"""What the exec listener costs (``sandbox/execnotify.py``): every exec of a session
waits until the host has read its argv.

The same honest loop, ``for i in $(seq N); do /bin/true; done`` (a build's shape:
thousands of short execs), timed inside the sandbox (so the call's own overhead is not
counted), in the same run, interleaved round by round so that the host's load hits
every mode alike:

- ``host``: the loop on the host, no sandbox (reference);
- ``host_listener``: the same loop on the host under the exec filter, answered by the
  notifier thread of this process (the listener's own cost, without the sandbox);
- ``sandbox_no_notifier``: a default-policy ``Session`` whose supervisor installs no
  exec listener (the host's switch is turned off for this benchmark only, as on a
  kernel without ``SECCOMP_RET_USER_NOTIF``); the process sensor still runs;
- ``sandbox_notifier``: the same session as shipped.

Reported: ms per exec (median of the rounds), the ratio notifier / no notifier (of
the medians, and per round: the two loops of a round run back to back) and the added
µs per exec; session create p50 with and without the listener (the
supervisor installs the filter and sends the fd before its first answer).

    .venv/bin/python benchmarks/bench_exec.py [--execs 2000] [--rounds 5] [--creates 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import bench_state_dir, emit, pct

from bastion import Session
from bastion.sandbox import sandbox as sandbox_module
from bastion.sandbox.execnotify import available, notifier

LOOP = 's=$(date +%s%N); for i in $(seq {n}); do /bin/true; done; e=$(date +%s%N); echo $((e-s))'


def _with_notifier(enabled: bool) -> None:
    sandbox_module.exec_notify_gap = (available if enabled  # type: ignore[assignment]
                                      else (lambda: "disabled by bench_exec"))


def _session(state: Path, enabled: bool) -> Session:
    _with_notifier(enabled)
    try:
        return Session(state_dir=state)
    finally:
        _with_notifier(True)


def _in_session(s: Session, n: int) -> float:
    r = s.exec(LOOP.format(n=n), timeout=600)
    assert r.ok, r.stderr
    return int(r.stdout.strip()) / 1e9


def _on_host(n: int) -> float:
    out = subprocess.run(["bash", "-c", LOOP.format(n=n)], capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip()) / 1e9


def _on_host_with_listener(n: int) -> float:
    """The loop on the host under the same exec filter, answered by this process's
    notifier: the listener's cost without the sandbox's (and its sensors') noise."""
    import array
    import ctypes
    import os
    import socket

    from bastion.sandbox.seccomp import notify_filter, seccomp_syscall_nr

    bpf = notify_filter()
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(38, 1, 0, 0, 0)  # no_new_privs, as bwrap leaves the supervisor
            prog = ctypes.create_string_buffer(bpf, len(bpf))
            fprog = (ctypes.c_uint64 * 2)(len(bpf) // 8, ctypes.addressof(prog))
            fd = libc.syscall(seccomp_syscall_nr(), 1, 8, ctypes.byref(fprog))
            child.sendmsg([b"l"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            os.close(fd)
            child.recv(1)
            os.dup2(out_w, 1)
            os.execv("/bin/bash", ["bash", "-c", LOOP.format(n=n)])
        finally:
            os._exit(127)
    os.close(out_w)
    _, anc, _, _ = parent.recvmsg(1, socket.CMSG_SPACE(4))
    listener = array.array("i", anc[0][2])[0]
    serving = notifier()
    serving.register(listener, lambda reason: None)
    parent.send(b"g")
    out = b""
    while chunk := os.read(out_r, 4096):
        out += chunk
    os.waitpid(pid, 0)
    os.close(out_r)
    serving.unregister(listener)
    parent.close()
    child.close()
    return int(out.strip()) / 1e9


# what the supervisor adds to its start: its own install_exec_listener (supervisor.py,
# defined without running the supervisor), timed inside a python3 -I -S like the
# supervisor's, after no_new_privs as bwrap leaves it
_INSTALL = """
import time
import _ctypes, sys, os
ns = {"__name__": "bastion_supervisor"}
exec(compile(open(sys.argv[3]).read(), sys.argv[3], "exec"), ns)
class _Long(_ctypes._SimpleCData):
    _type_ = "l"
class _Fn(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL
    _restype_ = _Long
prctl = _Fn(_ctypes.dlsym(_ctypes.dlopen(None, 2), "prctl"))
prctl(_Long(38), _Long(1), _Long(0), _Long(0), _Long(0))
bpf = bytes.fromhex(sys.argv[1])
t = time.perf_counter()
fd, error = ns["install_exec_listener"](bpf, int(sys.argv[2]))
elapsed = time.perf_counter() - t
assert fd >= 0, error
os.close(fd)
print(elapsed * 1e6)
"""


def _install_times(n: int) -> list[float]:
    from bastion.sandbox import supervisor
    from bastion.sandbox.seccomp import notify_filter, seccomp_syscall_nr

    argv = ["python3", "-I", "-S", "-c", _INSTALL, notify_filter().hex(),
            str(seccomp_syscall_nr()), supervisor.__file__]
    return [float(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
            for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--creates", type=int, default=10)
    args = ap.parse_args()
    if available() is not None:
        sys.exit(f"bench_exec: {available()}")
    state = bench_state_dir()
    n = args.execs
    with_n, without_n = _session(state, True), _session(state, False)
    handled0, cpu0 = notifier().handled, notifier().cpu_ns
    times: dict[str, list[float]] = {"host": [], "host_listener": [], "sandbox_no_notifier": [],
                                     "sandbox_notifier": []}
    try:
        _in_session(with_n, 50), _in_session(without_n, 50)  # warm the page cache
        for _ in range(args.rounds):
            times["host"].append(_on_host(n))
            times["host_listener"].append(_on_host_with_listener(n))
            times["sandbox_no_notifier"].append(_in_session(without_n, n))
            times["sandbox_notifier"].append(_in_session(with_n, n))
        handled = notifier().handled - handled0
        assert handled >= n * args.rounds, "the listener saw too few execs"
        cpu_per_exec_us = (notifier().cpu_ns - cpu0) / handled / 1000
    finally:
        with_n.close()
        without_n.close()
    creates: dict[str, list[float]] = {"notifier": [], "no_notifier": []}
    for _ in range(args.creates):
        for mode, enabled in (("no_notifier", False), ("notifier", True)):
            t = time.perf_counter()
            _session(state, enabled).close()  # create + close, the listener's both ends
            creates[mode].append(time.perf_counter() - t)
    per_exec = {k: statistics.median(v) / n * 1000 for k, v in times.items()}
    ratio = per_exec["sandbox_notifier"] / per_exec["sandbox_no_notifier"]
    # each round's two sandbox loops ran back to back: their ratio is the least noisy
    pairs = [a / b for a, b in zip(times["sandbox_notifier"], times["sandbox_no_notifier"])]
    host_pairs = [a / b for a, b in zip(times["host_listener"], times["host"])]
    emit("exec", {
        "execs_per_round": n, "rounds": args.rounds,
        "ms_per_exec_median": {k: round(v, 4) for k, v in per_exec.items()},
        "ms_per_exec_rounds": {k: [round(x / n * 1000, 4) for x in v] for k, v in times.items()},
        "ratio_notifier_vs_no_notifier": round(ratio, 3),
        "ratio_per_round": [round(x, 3) for x in pairs],
        "ratio_per_round_median": round(statistics.median(pairs), 3),
        "host_ratio_listener_vs_none_per_round": [round(x, 3) for x in host_pairs],
        "host_ratio_listener_vs_none_median": round(statistics.median(host_pairs), 3),
        "host_added_us_per_exec": round((per_exec["host_listener"] - per_exec["host"]) * 1000, 1),
        "added_us_per_exec": round((per_exec["sandbox_notifier"]
                                    - per_exec["sandbox_no_notifier"]) * 1000, 1),
        "notifier_cpu_us_per_exec": round(cpu_per_exec_us, 1),
        "supervisor_listener_install_us_p50": round(pct(_install_times(args.creates), 50), 1),
        "session_create_close_p50_s": {k: round(pct(v, 50), 3) for k, v in creates.items()},
        "load_avg_1m_after": round(__import__("os").getloadavg()[0], 1),
    })


if __name__ == "__main__":
    main()
