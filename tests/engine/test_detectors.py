"""Stateful detectors, fed events with controlled timestamps."""

from __future__ import annotations

from bastion.engine.detectors import (
    ConnectionDetector,
    CpuBurnDetector,
    ForkStormDetector,
    GpuDetector,
    TelemetryLossDetector,
)
from bastion.events import Action, Event, EventKind, Severity
from bastion.policy.rules import DetectorSettings

SETTINGS = DetectorSettings(expected_processes=["pytest", "gcc*"], fork_storm_per_second=10,
                            long_connection_seconds=60)


def _sample(cores: float, name: str = "x", pid: int = 9, session: str = "s", interval=0.25):
    return Event(EventKind.RESOURCE, session_id=session, call_id="c3", pid=pid, fields={
        "res.scope": "process", "res.cpu_cores": cores, "res.interval": interval,
        "proc.name": name, "proc.exe": f"/usr/bin/{name}"})


def test_cpu_burn_fires_once_after_the_configured_duration():
    d = CpuBurnDetector(SETTINGS)
    found = [d.observe(_sample(1.0)) for _ in range(8)]
    assert [bool(f) for f in found] == [False] * 5 + [True, False, False]
    f = found[5][0]
    assert f.rule_id == "detector.cpu_burn" and f.severity is Severity.HIGH
    assert f.evidence["res.burn_seconds"] == 1.5
    assert len(f.event_ids) == 6


def test_cpu_burn_tolerates_tick_noise_but_resets_on_a_pause():
    d = CpuBurnDetector(SETTINGS)
    for cores in (0.95, 0.92, 1.04, 0.93):
        assert not d.observe(_sample(cores))
    assert not d.observe(_sample(0.3))  # a pause: start again
    assert not any(d.observe(_sample(1.0)) for _ in range(5))
    assert d.observe(_sample(1.0))


def test_cpu_burn_spares_expected_processes_and_session_totals():
    d = CpuBurnDetector(SETTINGS)
    assert not any(d.observe(_sample(1.9, name="gcc-12")) for _ in range(20))
    assert not any(d.observe(_sample(1.9, name="pytest")) for _ in range(20))
    total = Event(EventKind.RESOURCE, session_id="s", fields={
        "res.scope": "session", "res.cpu_cores": 2.0, "res.interval": 0.25})
    assert not any(d.observe(total) for _ in range(20))


def test_cpu_burn_state_is_per_process_and_cleared_on_exit():
    d = CpuBurnDetector(SETTINGS)
    for _ in range(5):
        d.observe(_sample(1.0, pid=1))
        d.observe(_sample(1.0, pid=2, session="other"))
    d.observe(Event(EventKind.EXIT, session_id="s", pid=1))
    assert not d.observe(_sample(1.0, pid=1))
    assert d.observe(_sample(1.0, pid=2, session="other"))


def test_gpu_use_by_unexpected_process():
    d = GpuDetector(SETTINGS)
    ev = _sample(0.1, name="python3")
    gpu = Event(EventKind.RESOURCE, session_id="s", pid=5, fields={
        **ev.fields, "res.gpu_util": 80.0, "res.gpu_mem_bytes": 1 << 30})
    [f] = d.observe(gpu)
    assert f.rule_id == "detector.gpu_unexpected" and "80%" in f.message
    assert not d.observe(gpu)  # once per process
    low = Event(EventKind.RESOURCE, session_id="s", pid=6, fields={"res.gpu_util": 2.0})
    assert not d.observe(low)
    trainer = Event(EventKind.RESOURCE, session_id="s", pid=7, fields={
        "res.gpu_util": 99.0, "proc.name": "pytest"})
    assert not d.observe(trainer)


def test_fork_storm_over_a_one_second_window():
    d = ForkStormDetector(SETTINGS)
    base = 10**12

    def fork(ms: int) -> Event:
        return Event(EventKind.FORK, session_id="s", pid=1, ts=base + ms * 1_000_000)

    assert not any(d.observe(fork(i * 200)) for i in range(20))  # 5/s: fine
    hits = [d.observe(fork(5000 + i * 10)) for i in range(15)]  # 100/s
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


def test_cpu_burn_judges_demand_on_a_busy_host():
    d = CpuBurnDetector(SETTINGS)

    def starved(demand: float) -> Event:
        ev = _sample(0.3)
        return Event(EventKind.RESOURCE, session_id="s", pid=9, fields={
            **ev.fields, "res.cpu_demand": demand})

    assert not any(d.observe(starved(0.4)) for _ in range(10))  # wants little: fine
    found = [d.observe(starved(0.98)) for _ in range(6)]  # wants a core, gets 0.3
    assert [bool(f) for f in found] == [False] * 5 + [True]
    assert found[-1][0].evidence["res.cpu_demand"] == 0.98


def test_cpu_burn_threshold_is_capped_by_the_session_cpu_limit():
    d = CpuBurnDetector(SETTINGS, cap_cores=0.5)
    found = [d.observe(_sample(0.48)) for _ in range(6)]
    assert found[-1] and not any(found[:-1])
