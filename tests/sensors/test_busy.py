"""Background compute judged by how long it stays runnable, in real sessions.

The CPU-used budgets are set out of reach here, so every verdict below comes from the
busy-stretch evidence (``detector.background_busy`` with ``busy`` in its evidence): a
burner that detached, renamed itself, split itself, throttled itself with sleeps, a
nice value or SIGSTOP/SIGCONT is runnable most of the time and is *noted* within
about a second; an honest daemon idles, or works for a call that talks to it, and is
not. With no mining evidence the note is low (no action, no penalty: a ``nohup``
training job looks the same); such a burner is contained past the generous
``background_kill_cpu_seconds`` budget (small here in ``KILL_SOON``) or as soon as it
shows evidence (``tests/sensors/test_compute_context.py``).
"""

from __future__ import annotations

from bastion.events import Action, EventKind

from .monitor import alive, events_of, verdicts_named, wait_for

# only the busy stretch can fire: the CPU-used budgets are out of reach
BUSY_ONLY = {"rules": {"detectors": {
    "background_cpu_seconds": 500, "background_total_cpu_seconds": 500,
    "background_kill_cpu_seconds": 500, "cpu_budget_seconds": None, "sample_interval": 0.1,
    "background_busy_seconds": 0.8, "background_busy_cpu_seconds": 0.4}}}
# the same, with a small generous budget: an evidence-free burner is contained past it.
# Seconds of CPU past the note's threshold, so that the note comes first on any machine
# (at 1.0 a fast, quiet one crossed both in one sample and the kill came alone)
KILL_SOON = {"rules": {"detectors": {**BUSY_ONLY["rules"]["detectors"],
                                     "background_kill_cpu_seconds": 4.0}}}
COMPUTE_RULES = ("detector.background_compute", "detector.compute_budget",
                 "detector.compute_with_mining_evidence", "detector.background_busy")

# two processes, each busy half of every 20 ms and asleep the other half, at nice 19
NICE_SPLIT = r"""
import os, time
os.nice(19)
def work():
    while True:
        t = time.monotonic()
        while time.monotonic() - t < 0.01:
            pass
        time.sleep(0.01)
if os.fork() == 0:
    work()
work()
"""
# cpulimit-style: a burner held to ~60% duty by SIGSTOP/SIGCONT from its parent
STOP_CONT = r"""
import os, signal, time
pid = os.fork()
if pid == 0:
    while True:
        pass
while True:
    time.sleep(0.03)
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.02)
    os.kill(pid, signal.SIGCONT)
"""
# a build daemon: detaches, warms up, then works only for clients that connect to it
DAEMON = r"""
import os, socket, sys, time
port_file = sys.argv[1]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
sum(range(300000))  # warm-up: a little CPU at start
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.getsockname()[1]))
os.rename(port_file + ".tmp", port_file)
while True:
    conn, _ = srv.accept()
    seconds = float(conn.recv(64))
    end = time.process_time() + seconds
    while time.process_time() < end:  # compile, for the client that waits
        pass
    conn.sendall(b"done")
    conn.close()
"""
CLIENT = r"""
import socket, sys
port = int(open(sys.argv[1]).read())
c = socket.create_connection(("127.0.0.1", port))
c.sendall(sys.argv[2].encode())
print(c.recv(64).decode())
"""


def _compute_verdicts(s):
    return [v for v in list(s.verdicts) if v.rule_id in COMPUTE_RULES]



def _noted_busy(s, call_id: str):
    """The low note on the busy stretch, charged to the call; nothing killed."""
    found = wait_for(lambda: _compute_verdicts(s), timeout=90)
    assert found, [e.fields for e in events_of(s, EventKind.RESOURCE)
                   if e.fields.get("res.scope") == "call"][-4:]
    verdict = found[0]
    assert verdict.rule_id == "detector.background_busy", verdict
    assert verdict.evidence.get("busy") is True, verdict.evidence
    assert verdict.call_id == call_id and verdict.action is Action.NONE
    assert verdict.severity.name == "LOW"  # no penalty
    assert verdict.evidence["busy_cpu_seconds"] >= 0.4
    pids = verdict.evidence["res.bg_pids"]
    assert pids and any(alive(p) for p in pids)  # noted, not killed
    return verdict


def _contained(s, call_id: str):
    """Killed as background compute past the (small) generous budget."""
    found = wait_for(lambda: verdicts_named(s, "detector.background_compute"), timeout=120)
    assert found, [v.rule_id for v in s.verdicts]
    verdict = found[0]
    assert verdict.call_id == call_id and verdict.action is Action.KILL
    assert verdict.evidence["session_background_long"] >= 4.0
    pids = verdict.evidence["res.bg_pids"]
    assert pids and wait_for(lambda: not any(alive(p) for p in pids))
    return verdict


def test_a_detached_burner_is_noted_on_its_busy_stretch(monitored):
    s = monitored(BUSY_ONLY)
    r = s.exec("nohup python3 -c 'while True: pass' >/dev/null 2>&1 &", call_id="c1", step=1)
    assert r.exit_code == 0
    verdict = _noted_busy(s, "c1")
    assert "python3" in verdict.message and "runnable" in verdict.message


def test_a_double_forked_burner_dressed_as_a_kernel_thread_is_contained_as_mining(monitored):
    """Hiding is the evidence: argv0 set to "[kworker/0:2]" makes its background compute
    judged like compute with mining evidence, killed on its busy stretch rather than
    noted until the generous budget."""
    s = monitored(BUSY_ONLY)
    r = s.exec('(exec -a "[kworker/0:2]" python3 -c "while True: pass" >/dev/null 2>&1 &)',
               call_id="c2", step=2)
    assert r.exit_code == 0
    found = wait_for(lambda: verdicts_named(s, "detector.compute_with_mining_evidence"),
                     timeout=90)
    assert found, [v.rule_id for v in s.verdicts]
    verdict = found[0]
    assert verdict.call_id == "c2" and verdict.action is Action.KILL
    assert "system component" in verdict.message, verdict.message
    pids = verdict.evidence["res.bg_pids"]
    assert pids and wait_for(lambda: not any(alive(p) for p in pids))
    assert not verdicts_named(s, "detector.background_compute")


def test_a_burner_that_renames_itself_a_kernel_thread_at_run_time_is_contained_as_mining(
        monitored):
    """Held-out: prctl(PR_SET_NAME) through ctypes after the start (no exec -a, the name
    built from pieces): its name while it burns is the evidence, read with its CPU."""
    s = monitored(BUSY_ONLY)
    code = ("import ctypes, time; ctypes.CDLL(None).prctl(15, b'kwor' + b'ker/0:1', 0, 0, 0)\n"
            "t = time.time() + 60\nwhile time.time() < t: pass\n")
    s.write_file("/workspace/job.py", code, call_id="c0")
    r = s.exec("(setsid python3 job.py >/dev/null 2>&1 &)", call_id="c2", step=2)
    assert r.exit_code == 0
    found = wait_for(lambda: verdicts_named(s, "detector.compute_with_mining_evidence"),
                     timeout=90)
    assert found, [v.rule_id for v in s.verdicts]
    verdict = found[0]
    assert verdict.call_id == "c2" and verdict.action is Action.KILL
    assert "kworker/0:1" in verdict.message, verdict.message
    pids = verdict.evidence["res.bg_pids"]
    assert pids and wait_for(lambda: not any(alive(p) for p in pids))


def test_a_niced_miner_split_over_two_half_duty_processes_is_noted_then_contained(monitored):
    s = monitored(KILL_SOON)
    s.write_file("/workspace/m.py", NICE_SPLIT, call_id="c0")
    r = s.exec("setsid python3 m.py >/dev/null 2>&1 &", call_id="c3", step=3)
    assert r.exit_code == 0
    _noted_busy(s, "c3")
    _contained(s, "c3")


def test_a_burner_duty_cycled_by_sigstop_is_noted(monitored):
    s = monitored(BUSY_ONLY)
    s.write_file("/workspace/limit.py", STOP_CONT, call_id="c0")
    r = s.exec("nohup python3 limit.py >/dev/null 2>&1 &", call_id="c4", step=4)
    assert r.exit_code == 0
    _noted_busy(s, "c4")


def test_a_build_daemon_working_for_a_call_and_then_idling_is_not_judged(monitored):
    """A daemon that `setsid`s (Gradle, Bazel, sccache) computes for the calls that
    connect to it and idles between them: its work is theirs, not mining."""
    s = monitored(BUSY_ONLY)
    s.write_file("/workspace/daemon.py", DAEMON, call_id="c0")
    s.write_file("/workspace/client.py", CLIENT, call_id="c0b")
    start = s.exec("setsid nohup python3 daemon.py port >/dev/null 2>&1 & "
                   "for i in $(seq 1 300); do [ -f port ] && break; sleep 0.1; done; cat port",
                   call_id="c1", step=1, timeout=60)
    assert start.outcome.value == "ok" and start.stdout.strip(), start
    for n, seconds in enumerate(("1.5", "1.0"), start=2):
        build = s.exec(f"python3 client.py port {seconds}", call_id=f"c{n}", step=n,
                       timeout=120)
        assert build.outcome.value == "ok" and "done" in build.stdout, build
    s.exec("sleep 2", call_id="c4", step=4)  # the daemon idles after the builds
    calls = [e for e in events_of(s, EventKind.RESOURCE) if e.fields.get("res.scope") == "call"]
    served = sum(float(e.fields.get("res.served_cpu_seconds") or 0.0) for e in calls)
    assert served > 1.5, served  # the daemon's work was seen, and seen as the calls'
    assert not _compute_verdicts(s), _compute_verdicts(s)
    assert not [v for v in s.verdicts if v.action is not Action.NONE], s.verdicts
    alive = s.exec("python3 client.py port 0.1", call_id="c5", step=5)
    assert "done" in alive.stdout, alive  # and it is still there to serve


def test_an_idle_daemon_after_its_warm_up_is_not_judged(monitored):
    """A language server, a dev server or a build daemon started in the background:
    a little CPU at start, then it sleeps until someone talks to it."""
    s = monitored(BUSY_ONLY)
    r = s.exec("setsid nohup python3 -c 'import time; sum(range(2000000)); time.sleep(60)' "
               ">/dev/null 2>&1 & (python3 -m http.server 8765 --bind 127.0.0.1 "
               ">/dev/null 2>&1 &)", call_id="c1", step=1)
    assert r.exit_code == 0
    s.exec("sleep 3", call_id="c2", step=2)
    ok = s.exec("python3 -c \"import urllib.request as u; "
                "print(u.urlopen('http://127.0.0.1:8765/').status)\"", call_id="c3", step=3)
    assert "200" in ok.stdout, ok
    assert not _compute_verdicts(s), _compute_verdicts(s)


IDLE_HOLDER = r"""
import socket, time
c = socket.create_connection(("127.0.0.1", int(open("port").read())))
time.sleep(30)  # holds the connection, asks for nothing
"""
LISTEN_THEN_BURN = r"""
import os, socket
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
open("port.tmp", "w").write(str(srv.getsockname()[1]))
os.rename("port.tmp", "port")
conn, _ = srv.accept()
x = 1
while True:
    x = (x * 6364136223846793005 + 1) & 0xFFFFFFFFFFFFFFFF
"""


def test_an_idle_connection_from_a_call_does_not_make_a_burner_served(monitored):
    """A burner that accepts one connection and computes, while a call holds the
    connection and asks for nothing: nobody waits on its work."""
    s = monitored(BUSY_ONLY)
    s.write_file("/workspace/svc.py", LISTEN_THEN_BURN, call_id="c0")
    s.write_file("/workspace/hold.py", IDLE_HOLDER, call_id="c0b")
    s.exec("(setsid python3 svc.py >/dev/null 2>&1 &); "
           "for i in $(seq 1 100); do [ -f port ] && break; sleep 0.1; done", call_id="c1",
           step=1, timeout=30)
    s.exec("timeout 20 python3 hold.py", call_id="c2", step=2, timeout=40)
    verdict = _noted_busy(s, "c1")
    assert verdict.evidence["call.returned"] is True


def test_a_background_make_j2_of_many_small_units_is_left_to_finish(monitored):
    """`nohup make -j2 &`: two compilers busy at all times for seconds, but each a
    short-lived process: judged on the large budget for short-lived work, not on the
    busy stretch (which needs a process that stays)."""
    s = monitored(BUSY_ONLY)
    r = s.exec("for i in $(seq 1 20); do printf 'import sys\\nsum(range(2500000))\\n' > u$i.py; "
               "done; printf 'all: $(patsubst %%.py,%%.o,$(wildcard *.py))\\n%%.o: %%.py\\n"
               "\\tpython3 $< && touch $@\\n' > Makefile; "
               "nohup make -j2 > build.log 2>&1 & echo $! > build.pid", call_id="c1", step=1)
    assert r.exit_code == 0, r
    done = s.exec("while kill -0 $(cat build.pid) 2>/dev/null; do sleep 0.2; done; ls *.o | wc -l",
                  call_id="c2", step=2, timeout=180)
    assert done.stdout.strip() == "20", (done, s.verdicts)
    assert not _compute_verdicts(s), _compute_verdicts(s)
