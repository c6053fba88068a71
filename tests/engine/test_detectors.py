"""Stateful detectors, fed events with controlled timestamps."""

from __future__ import annotations

from bastion.engine.detectors import (
    ComputeDetector,
    ConnectionDetector,
    ForkStormDetector,
    GpuDetector,
    MiningEvidence,
    ResourceLimitDetector,
    ResourceRequestDetector,
    TelemetryLossDetector,
)
from bastion.events import Action, Event, EventKind, Severity
from bastion.policy.rules import DetectorSettings

SETTINGS = DetectorSettings(expected_processes=["pytest", "gcc*"], fork_storm_per_second=10,
                            long_connection_seconds=60)


def _call(used: float, bg: float = 0.0, call: str = "c3", session: str = "s", t: float = 0.0,
          returned: bool = False) -> Event:
    """A per-call compute sample: core-seconds used (and by background processes)."""
    return Event(EventKind.RESOURCE, session_id=session, call_id=call, step=3,
                 ts=int((1000 + t) * 1e9), fields={
                     "res.scope": "call", "res.cpu_seconds": used, "res.bg_cpu_seconds": bg,
                     "res.interval": 0.25, "call.returned": returned,
                     "res.bg_pids": [9] if bg else [], "res.bg_names": "x" if bg else ""})


BUDGETS = DetectorSettings(background_cpu_seconds=1.5, background_window=60,
                           cpu_budget_seconds=30, cpu_budget_window=60,
                           evidence_cpu_seconds=1.0)


def _feed(d, samples):
    return [d.observe(e) for e in samples]


def test_foreground_work_within_the_call_is_never_judged():
    d = ComputeDetector(DetectorSettings())  # default budgets
    # a 60 s job keeping both cores busy in the call's foreground
    found = _feed(d, [_call(0.5, t=i * 0.25) for i in range(240)])
    assert not any(found)


def _rules(found):
    return [(i, f[0].rule_id, f[0].severity) for i, f in enumerate(found) if f]


def test_evidence_free_background_compute_is_noted_then_killed_past_the_generous_budget():
    d = ComputeDetector(DetectorSettings(background_cpu_seconds=1.5, background_window=60,
                                         background_kill_cpu_seconds=5.0,
                                         background_kill_window=600, cpu_budget_seconds=None))
    found = _feed(d, [_call(0.25, bg=0.25, t=i * 0.25, returned=True) for i in range(30)])
    assert _rules(found) == [(5, "detector.background_busy", Severity.LOW),
                             (19, "detector.background_compute", Severity.HIGH)]
    note, kill = found[5][0], found[19][0]
    assert note.action is None and "no mining evidence" in note.message  # low: no action
    assert "mining" in kill.categories and kill.evidence["session_background_long"] == 5.0


def test_a_nohup_training_job_polled_later_is_only_noted():
    """`nohup python3 train.py > log 2>&1 &`: one core busy for 60 s after its call
    returned, with default budgets: a low note, no kill, no penalty."""
    d = ComputeDetector(DetectorSettings())
    found = _feed(d, [_call(0.25, bg=0.25, t=i * 0.25, returned=True) for i in range(240)])
    rules = _rules(found)
    assert len(rules) == 1 and rules[0][1:] == ("detector.background_busy", Severity.LOW)


def test_a_throttled_miner_split_over_two_calls_is_summed():
    d = ComputeDetector(DetectorSettings(background_cpu_seconds=1.5,
                                         background_kill_cpu_seconds=4.0))
    found = []
    # two calls, each 0.85 duty x 0.5 core: neither alone reaches the budget quickly
    for i in range(40):
        found += [(c, d.observe(_call(0.106, bg=0.106, call=c, t=i * 0.25)))
                  for c in ("c1", "c2")]
    fired = {(c, f[0].rule_id) for c, f in found if f}
    assert fired == {(c, r) for c in ("c1", "c2")  # both contributors noted, then contained
                     for r in ("detector.background_busy", "detector.background_compute")}


def test_short_lived_background_workers_get_the_large_budget():
    """A background build: many compiler runs, none alive across two samples."""
    d = ComputeDetector(DetectorSettings(background_cpu_seconds=1.5,
                                         background_total_cpu_seconds=5.0))

    def build(t: float) -> Event:
        e = _call(0.25, bg=0.25, t=t, returned=True)
        return Event(e.kind, session_id="s", call_id="c3", step=3, ts=e.ts, fields={
            **e.fields, "res.bg_persistent_cpu_seconds": 0.0})

    found = _feed(d, [build(i * 0.25) for i in range(24)])
    assert _rules(found) == [(19, "detector.background_busy", Severity.LOW)]  # 5, not 1.5


def test_a_bystander_call_is_not_contained_with_the_miner():
    d = ComputeDetector(DetectorSettings(background_kill_cpu_seconds=2.0))
    found = []
    for i in range(12):
        found += [(c, d.observe(_call(amount, bg=amount, call=c, t=i * 0.25, returned=True)))
                  for c, amount in (("c1", 0.25), ("c2", 0.002))]  # c2: an idle dev server
    assert {c for c, f in found if f and f[0].severity is Severity.HIGH} == {"c1"}
    assert {c for c, f in found if f} == {"c1"}


def test_evidence_after_the_note_kills_on_the_next_sample():
    d = ComputeDetector(BUDGETS)
    found = _feed(d, [_call(0.25, bg=0.25, t=i * 0.25, returned=True) for i in range(8)])
    assert _rules(found) == [(5, "detector.background_busy", Severity.LOW)]
    # the detached process now speaks Stratum to a pool (its connection is its call's)
    d.observe(Event(EventKind.NET_FLOW, session_id="s", call_id="c3", fields={
        "net.stratum_method": "mining.submit", "net.dst_ip": "203.0.113.10",
        "net.dst_port": 3333}))
    [kill] = d.observe(_call(0.25, bg=0.25, t=2.25, returned=True))
    assert kill.rule_id == "detector.compute_with_mining_evidence"
    assert kill.severity is Severity.HIGH and "Stratum" in kill.message


def test_compute_by_a_hidden_program_is_judged_like_compute_with_evidence():
    """A renamed copy of an interpreter (`cp $(command -v awk) .cache/update`) or a
    process dressed as a kernel thread (`exec -a "[kworker/0:1]"`) keeping a core busy
    in the background: hiding is the evidence. The same compute by `python3 train.py`
    under its own name is only noted."""
    for hidden in ({"proc.renamed": True, "proc.copy_of": "mawk", "proc.name": "mawk",
                    "proc.exe": "/workspace/.cache/update", "proc.comm": "update"},
                   {"proc.name": "python3", "proc.exe": "/usr/bin/python3.11",
                    "proc.comm": "[kworker/0:1]"}):
        d = ComputeDetector(BUDGETS)
        d.observe(Event(EventKind.EXEC, session_id="s", call_id="c3", fields=hidden))
        found = _feed(d, [_call(0.25, bg=0.25, t=i * 0.25, returned=True) for i in range(8)])
        assert "detector.compute_with_mining_evidence" in [r[1] for r in _rules(found)], hidden
    d = ComputeDetector(BUDGETS)  # argv0 set like a kernel thread's, by the command
    d.observe(Event(EventKind.COMMAND, session_id="s", call_id="c3", fields={
        "cmd.features": ["exec_argv0"], "cmd.args": ['exec [kworker/1:2]', "exec -a"]}))
    found = _feed(d, [_call(0.25, bg=0.25, t=i * 0.25, returned=True) for i in range(8)])
    assert "detector.compute_with_mining_evidence" in [r[1] for r in _rules(found)]
    d = ComputeDetector(BUDGETS)  # a server naming its workers is not hiding
    d.observe(Event(EventKind.COMMAND, session_id="s", call_id="c3", fields={
        "cmd.features": ["set_proc_name", "interp_code"],
        "cmd.interp_code": ["import setproctitle; setproctitle.setproctitle('app: worker 1')"]}))
    d.observe(Event(EventKind.EXEC, session_id="s", call_id="c3", fields={
        "proc.name": "python3", "proc.exe": "/usr/bin/python3.11", "proc.comm": "python3"}))
    found = _feed(d, [_call(0.25, bg=0.25, t=i * 0.25, returned=True) for i in range(8)])
    assert "detector.compute_with_mining_evidence" not in [r[1] for r in _rules(found)]


def test_strong_evidence_in_one_call_weighs_on_another_calls_background_only():
    """Hashers started in c2, the pool dialogue in c1: one miner. A third call's own
    foreground work is not judged by c1's evidence."""
    d = ComputeDetector(BUDGETS)
    d.observe(Event(EventKind.NET_CONNECT, session_id="s", call_id="c1", fields={
        "net.app": "stratum", "net.dst_ip": "203.0.113.10", "net.dst_port": 3333}))
    assert not any(_feed(d, [_call(0.5, call="c3", t=i * 0.25) for i in range(8)]))
    found = _feed(d, [_call(0.25, bg=0.25, call="c2", t=3 + i * 0.25, returned=True)
                      for i in range(6)])
    assert _rules(found) == [(3, "detector.compute_with_mining_evidence", Severity.HIGH)]
    assert "call c1" in found[3][0].message


def test_background_compute_below_budget_in_a_window_is_tolerated():
    d = ComputeDetector(BUDGETS)
    # a dev server answering a request now and then: 0.1 core-s every 10 s
    assert not any(_feed(d, [_call(0.1, bg=0.1, t=i * 10.0) for i in range(30)]))


def test_session_budget_catches_foreground_compute_over_the_window():
    d = ComputeDetector(BUDGETS)
    found = _feed(d, [_call(0.5, t=i * 0.25) for i in range(70)])
    hits = [f for f in found if f]
    assert len(hits) == 1 and hits[0][0].rule_id == "detector.compute_budget"
    assert found.index(hits[0]) == 59  # 60 x 0.5 = 30 core-seconds


def test_compute_with_mining_evidence_uses_the_small_budget():
    d = ComputeDetector(BUDGETS)
    d.observe(Event(EventKind.NET_CONNECT, session_id="s", call_id="c3", fields={
        "net.app": "stratum", "net.dst_ip": "203.0.113.10", "net.dst_port": 3333}))
    found = _feed(d, [_call(0.25, t=i * 0.25) for i in range(6)])
    assert [bool(f) for f in found] == [False, False, False, True, False, False]
    assert found[3][0].rule_id == "detector.compute_with_mining_evidence"
    assert "Stratum" in found[3][0].message
    # another call of the same session has no evidence: its foreground work is fine
    assert not any(_feed(d, [_call(0.5, call="c4", t=10 + i * 0.25) for i in range(20)]))


def test_a_bare_hash_loop_is_weak_evidence():
    d = ComputeDetector(BUDGETS)
    d.observe(Event(EventKind.COMMAND, session_id="s", call_id="c3", fields={
        "cmd.features": ["interp_code", "interp_hash_loop"]}))
    found = _feed(d, [_call(0.5, t=i * 0.25) for i in range(24)])
    assert [i for i, f in enumerate(found) if f] == [5]  # 3 core-seconds, not 1


def test_a_nonce_search_is_strong_evidence():
    d = ComputeDetector(BUDGETS)
    d.observe(Event(EventKind.COMMAND, session_id="s", call_id="c3", fields={
        "cmd.features": ["interp_hash_loop", "interp_hash_spin"]}))
    found = _feed(d, [_call(0.5, t=i * 0.25) for i in range(4)])
    assert [i for i, f in enumerate(found) if f] == [1]  # 1 core-second
    assert "nonce" in found[1][0].message


def test_compute_state_is_forgotten_with_the_session():
    d = ComputeDetector(BUDGETS)
    _feed(d, [_call(0.25, bg=0.25, t=i * 0.25) for i in range(5)])
    d.forget("s")
    assert not any(_feed(d, [_call(0.25, bg=0.25, t=2 + i * 0.25) for i in range(5)]))


def test_pids_and_memory_limits_become_verdicts():
    d = ResourceLimitDetector()
    pids = Event(EventKind.RESOURCE, session_id="s", call_id="c1", fields={
        "res.scope": "session", "res.limit": "pids", "res.limit_hits": 40, "res.pids": 256,
        "res.call_pids": 250})
    [f] = d.observe(pids)
    assert f.rule_id == "detector.pids_limit" and f.action is Action.KILL
    assert f.severity is Severity.HIGH and "c1" in f.message
    oom = Event(EventKind.RESOURCE, session_id="s", call_id="c2", fields={
        "res.scope": "session", "res.limit": "memory", "res.limit_hits": 1,
        "call.returned": True})
    [m] = d.observe(oom)
    assert m.rule_id == "detector.memory_limit" and m.action is Action.KILL
    running = Event(EventKind.RESOURCE, session_id="s", call_id="c5", fields={
        "res.scope": "session", "res.limit": "memory", "res.limit_hits": 1})
    assert d.observe(running)[0].action is Action.ALERT  # its result reports the OOM
    assert m.severity is Severity.LOW  # contained, not penalised
    orphan = Event(EventKind.RESOURCE, session_id="s", fields={
        "res.scope": "session", "res.limit": "memory", "res.limit_hits": 1})
    assert d.observe(orphan)[0].action is Action.ALERT  # never ends the session
    assert not d.observe(_call(1.0))


def _sample(cores: float, name: str = "x", pid: int = 9, session: str = "s", interval=0.25,
            background: bool = False):
    return Event(EventKind.RESOURCE, session_id=session, call_id="c3", pid=pid, fields={
        "res.scope": "process", "res.cpu_cores": cores, "res.interval": interval,
        "proc.name": name, "proc.exe": f"/usr/bin/{name}", "proc.background": background})


def _gpu(pid: int, name: str = "python3", background: bool = True, util: float = 80.0,
         call: str = "c3") -> Event:
    ev = _sample(0.1, name=name, pid=pid, background=background)
    return Event(EventKind.RESOURCE, session_id="s", call_id=call, pid=pid, fields={
        **ev.fields, "res.gpu_util": util, "res.gpu_mem_bytes": 1 << 30})


def test_gpu_use_is_judged_in_context():
    """A background GPU job (nohup training) is noted, and killed only past the
    session's background GPU budget; the call's own GPU work is never judged."""
    d = GpuDetector(DetectorSettings(expected_processes=["pytest"],
                                     gpu_background_kill_seconds=1.0))
    assert not d.observe(_gpu(4, background=False))  # the call's own training loop
    [note] = d.observe(_gpu(5))
    assert note.rule_id == "detector.gpu_background" and note.severity is Severity.LOW
    assert "80%" in note.message and note.action is None
    assert not d.observe(_gpu(5))  # noted once per process
    assert not d.observe(_gpu(6, util=2.0))
    assert not d.observe(_gpu(7, name="pytest"))  # expected_processes
    found = [d.observe(_gpu(5)) for _ in range(8)]  # 0.25 s samples: 1 s of GPU use
    kills = [f[0] for f in found if f]
    assert len(kills) == 1 and kills[0].rule_id == "detector.gpu_unexpected"
    assert kills[0].severity is Severity.HIGH and "budget" in kills[0].message
    assert not d.observe(_gpu(5))  # once per process


def test_background_gpu_use_with_evidence_in_another_call_is_killed_at_once():
    evidence = MiningEvidence()
    d = GpuDetector(SETTINGS, evidence)
    evidence.observe(Event(EventKind.NET_CONNECT, session_id="s", call_id="c1", fields={
        "net.app": "stratum", "net.dst_ip": "203.0.113.10", "net.dst_port": 3333}))
    [f] = d.observe(_gpu(9, call="c2"))
    assert f.rule_id == "detector.gpu_unexpected" and "Stratum" in f.message
    assert "call c1" in f.message


def test_gpu_use_with_mining_evidence_in_the_foreground():
    evidence = MiningEvidence()
    d = GpuDetector(SETTINGS, evidence)
    evidence.observe(Event(EventKind.COMMAND, session_id="s", call_id="c3", fields={
        "cmd.features": ["wallet_address"]}))
    ev = _sample(0.1, pid=8)
    [f] = d.observe(Event(EventKind.RESOURCE, session_id="s", call_id="c3", pid=8, fields={
        **ev.fields, "res.gpu_util": 90.0}))
    assert "wallet" in f.message


def test_fork_storm_needs_children_that_pile_up():
    d = ForkStormDetector(SETTINGS)
    base = 10**12

    def ev(kind: EventKind, ms: float) -> Event:
        return Event(kind, session_id="s", pid=1, ts=base + int(ms * 1_000_000))

    assert not any(d.observe(ev(EventKind.FORK, i * 200)) for i in range(20))  # 5/s: fine
    # a loop forking a short-lived program per file: fast, but every child exits
    loop = []
    for i in range(40):
        loop.append(d.observe(ev(EventKind.FORK, 5000 + i * 10)))
        loop.append(d.observe(ev(EventKind.EXIT, 5000 + i * 10 + 5)))
    assert not any(loop)
    hits = [d.observe(ev(EventKind.FORK, 9000 + i * 10)) for i in range(25)]  # a bomb
    assert sum(bool(h) for h in hits) == 1
    assert hits[10][0].evidence["forks_per_second"] == 11


def test_long_connection_and_beacon():
    d = ConnectionDetector(SETTINGS)
    flow = Event(EventKind.NET_FLOW, session_id="s", fields={
        "net.duration": 61.0, "net.conn_id": "k1", "net.dst_ip": "203.0.113.5",
        "net.dst_port": 22})
    [f] = d.observe(flow)
    assert f.rule_id == "detector.long_connection" and "203.0.113.5:22" in f.message
    assert not d.observe(flow)
    short = Event(EventKind.NET_CLOSE, session_id="s", fields={"net.duration": 3.0})
    assert not d.observe(short)

    def connect(sec: float, ip: str = "198.51.100.7") -> Event:
        return Event(EventKind.NET_CONNECT, session_id="s", ts=int(sec * 1e9), fields={
            "net.dst_ip": ip, "net.dst_port": 443, "net.decision": "allow"})

    beacon = [d.observe(connect(100 + 10 * i + (0.2 if i % 2 else 0))) for i in range(6)]
    assert [bool(b) for b in beacon] == [False] * 4 + [True, False]
    assert beacon[4][0].rule_id == "detector.beacon"
    # an allowed destination polled on a schedule: recorded, never a penalty
    assert beacon[4][0].severity is Severity.LOW and beacon[4][0].action is None
    # the same schedule to the session's own dev server (loopback) is no beacon
    assert not any(d.observe(connect(100 + 10 * i, ip=ip)) for ip in ("127.0.0.1", "::1")
                   for i in range(6))
    jitter = [0, 3, 30, 31, 90, 200]
    assert not any(d.observe(connect(t, ip="198.51.100.8")) for t in jitter)


def test_telemetry_loss_freezes_and_gap_is_reported():
    d = TelemetryLossDetector()
    [loss] = d.observe(Event(EventKind.TELEMETRY, fields={
        "telemetry.sensor": "process", "telemetry.reason": "ENOBUFS", "telemetry.loss": True}))
    assert loss.rule_id == "telemetry.loss" and loss.action is Action.FREEZE
    assert loss.severity is Severity.CRITICAL
    [gap] = d.observe(Event(EventKind.TELEMETRY, fields={
        "telemetry.sensor": "process", "telemetry.reason": "polling", "telemetry.gap": True}))
    assert gap.rule_id == "telemetry.degraded" and gap.action is None
    assert not d.observe(Event(EventKind.TELEMETRY, fields={"telemetry.sensor": "x"}))


def _command(raw: str, call: str = "c1") -> Event:
    from bastion.analysis import analyze_command

    return Event(EventKind.COMMAND, session_id="s", call_id=call, step=1,
                 fields=analyze_command(raw))


def test_requests_past_the_limits_are_verdicts_charged_to_their_call():
    from bastion.policy.sandbox import Limits

    d = ResourceRequestDetector(Limits(memory=4 << 30, disk=1 << 30))  # tmpfs: 1 GiB
    bombs = {"fallocate -l 60G f": "disk", "dd if=/dev/zero of=f bs=1G count=100": "disk",
             "head -c 50G /dev/zero > f": "disk", "dd if=/dev/zero of=fill": "disk",
             "python3 -c 'b = bytearray(30 * 2**30)'": "memory",
             "sudo fallocate --length=8GiB /workspace/big": "disk",
             "python3 -c 'a = []\nwhile True:\n    a.append(bytearray(1 << 26))'": "memory"}
    for n, (raw, kind) in enumerate(bombs.items()):
        [f] = d.observe(_command(raw, call=f"c{n}"))
        assert f.rule_id == "detector.resource_request" and f.severity is Severity.MEDIUM, raw
        assert f.evidence["request.kind"] == kind and "resource_abuse" in f.categories
        assert f.action is Action.ALERT  # the kernel holds it; recorded, not killed
    # just past the limit: an honest guess at a size, recorded without a penalty
    [near] = d.observe(_command("fallocate -l 1536M data.bin", call="c9"))
    assert near.severity is Severity.LOW


def test_bounded_sizes_and_sparse_files_are_not_requests_past_the_limit():
    from bastion.policy.sandbox import Limits

    d = ResourceRequestDetector(Limits(memory=4 << 30, disk=1 << 30))
    honest = [
        ("dd if=/dev/urandom of=blob.bin bs=1M count=200 status=none && fallocate -l 300M p.bin"
         " && truncate -s 100G sparse.img"),
        "head -c 50G /dev/zero | sha256sum",  # streamed, nothing stored
        "python3 -c 'table = [bytearray(1 << 20) for _ in range(600)]'",
        "fallocate --punch-hole -o 0 -l 60G f",  # frees space
        "dd if=/dev/zero of=/dev/null bs=1M count=100000",
        "python3 -c 'import sys; b = bytearray(int(sys.argv[1]))' 1000",
        # a reader loop that stops at the end of its input
        ("python3 -c 'import sys\nparts = []\nwhile True:\n    c = sys.stdin.buffer.read(65536)"
         "\n    if not c: break\n    parts.append(bytes(c))'"),
    ]
    assert not any(d.observe(_command(raw)) for raw in honest)
    # without the policy's limits nothing is judged (engines built by hand)
    assert not ResourceRequestDetector().observe(_command("fallocate -l 60G f"))


def test_strong_evidence_with_a_busy_streak_kills_a_miner_starved_of_cpu():
    """On a crowded host a detached nonce search gets little CPU but stays runnable:
    with evidence, the busy streak is enough; without, it is only noted."""
    def starved(call: str, t: float) -> Event:
        e = _call(0.01, bg=0.01, call=call, t=t, returned=True)
        return Event(e.kind, session_id=e.session_id, call_id=call, step=3, ts=e.ts, fields={
            **e.fields, "res.bg_runnable_seconds": 0.25 * (t + 1),
            "res.bg_runnable_cpu_seconds": 0.01 * (t + 1)})

    d = ComputeDetector(DetectorSettings())
    assert not any(_feed(d, [starved("c2", i * 0.25) for i in range(12)]))
    d.observe(Event(EventKind.COMMAND, session_id="s", call_id="c1", fields={
        "cmd.features": ["hash_spin_program_written"]}))
    [kill] = d.observe(starved("c2", 3.0))
    assert kill.rule_id == "detector.compute_with_mining_evidence"
    assert "nonce-search program" in kill.message and "call c1" in kill.message


def test_strong_evidence_kills_after_half_a_second_runnable_however_little_cpu():
    """The kill must come within 2 s of the evidence on a crowded host: half a second
    runnable with 0.02 core-s used is enough with strong evidence, and nothing
    without (an honest background job starved the same way is not judged on it)."""
    def starved(call: str, t: float, session: str) -> Event:
        e = _call(0.0, bg=0.0, call=call, t=t, returned=True)
        return Event(e.kind, session_id=session, call_id=call, step=3, ts=e.ts, fields={
            **e.fields, "res.bg_runnable_seconds": 0.25 * (t / 0.25 + 1),
            "res.bg_runnable_cpu_seconds": 0.01 * (t / 0.25 + 1)})

    d = ComputeDetector(DetectorSettings())
    d.observe(Event(EventKind.COMMAND, session_id="miner", call_id="c1", fields={
        "cmd.features": ["interp_hash_spin"]}))
    first = d.observe(starved("c1", 0.0, "miner"))  # 0.25 s runnable: not yet
    assert not [f for f in first if f.rule_id == "detector.compute_with_mining_evidence"]
    [kill] = d.observe(starved("c1", 0.25, "miner"))  # 0.5 s runnable, 0.02 core-s
    assert kill.rule_id == "detector.compute_with_mining_evidence"
    honest = [f for t in range(12) for f in d.observe(starved("c1", t * 0.25, "honest"))]
    assert not [f for f in honest if f.severity.name != "LOW"]
