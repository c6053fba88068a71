"""The live stream and ``/metrics`` of a real server over real audit logs: a verdict
appended after a client connected reaches it (and only clients whose filter matches),
and every metric parses with Prometheus' own parser and equals a count over the
trail."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bastion import Severity
from bastion.audit.reader import open_logs

from .conftest import Server
from .sse import SSEFollower
from .trails import action, build_two_runs, open_test_trail, verdict, write_episode


@pytest.fixture
def server(serve_factory: Any, state_dir: Path) -> Server:
    build_two_runs(state_dir)
    return serve_factory()


def test_stream_delivers_a_verdict_appended_after_the_client_connected(
        server: Server, state_dir: Path) -> None:
    everything = SSEFollower(f"{server.url}/api/v1/stream", server.reader)
    only_b = SSEFollower(f"{server.url}/api/v1/stream", server.run_token("run-b"))
    critical = SSEFollower(f"{server.url}/api/v1/stream", server.reader,
                           {"severity": "critical", "types": "verdict"})
    try:
        for follower in (everything, only_b, critical):
            assert follower.next(30, kind="hello")
        # nothing from before the connection is replayed
        with open_test_trail(state_dir, "run-a") as trail:
            v = verdict("run-a", "ep-2", "s-2", 7, "shells.reverse", Severity.HIGH, ("shell",))
            seq = trail.append_verdict(v)
        got = everything.next(30, kind="verdict")  # latency figures: benchmarks/bench_serve.py
        body = got.json()
        assert got.id == f"run-a:{seq}"
        assert (body["rule_id"], body["episode_id"], body["step"], body["call_id"],
                body["severity"], body["id"]) == ("shells.reverse", "ep-2", 7, "c7", "high",
                                                  v.id)
        # an action appended next reaches the unfiltered client as an action event
        with open_test_trail(state_dir, "run-b") as trail:
            write_episode(trail, "run-b", "ep-10", "s-10", steps=3)
        kinds = [everything.next(30).event for _ in range(2)]
        assert kinds == ["verdict", "action"]
        # run-b's token saw only run-b's records, the critical filter only the critical one
        first_b = only_b.next(30)
        assert first_b.event == "verdict" and first_b.json()["run_id"] == "run-b"
        first_crit = critical.next(30)
        assert first_crit.json()["severity"] == "critical"
        assert first_crit.json()["episode_id"] == "ep-10"
    finally:
        for follower in (everything, only_b, critical):
            follower.close()


def _trail_counts(state_dir: Path) -> dict[str, Counter[Any]]:
    counts: dict[str, Counter[Any]] = {k: Counter() for k in (
        "events", "verdicts", "categories", "actions", "connections", "dns", "bytes",
        "sessions", "calls", "telemetry")}
    for log in open_logs(state_dir):
        with log:
            for r in log.records():
                d = r.data
                f = d.get("fields") or {}
                if r.type == "verdict":
                    counts["verdicts"][(d["severity"], d["action"])] += 1
                    for c in d["categories"] or ["uncategorised"]:
                        counts["categories"][(c, d["severity"])] += 1
                    continue
                if not r.is_event:
                    continue
                counts["events"][d["kind"]] += 1
                if d["kind"] == "action":
                    counts["actions"][(f["action.name"], str(f.get("action.ok", "")).lower())] += 1
                elif d["kind"] == "net.connect":
                    counts["connections"][f["net.decision"]] += 1
                elif d["kind"] == "net.close":
                    counts["bytes"][(f["net.decision"], "out")] += f["net.bytes_out"]
                    counts["bytes"][(f["net.decision"], "in")] += f["net.bytes_in"]
                elif d["kind"] == "dns.query":
                    counts["dns"][(f["dns.decision"], f["dns.rcode"])] += 1
                elif d["kind"] == "telemetry" and f.get("telemetry.loss"):
                    counts["telemetry"][f["telemetry.sensor"]] += 1
                elif f.get("life.state") == "created":
                    counts["sessions"][d["run_id"]] += 1
                elif f.get("life.state") == "call_end":
                    counts["calls"][(d["run_id"], f["outcome"])] += 1
    return counts


def test_metrics_parse_and_equal_counts_over_the_trail(server: Server,
                                                       state_dir: Path) -> None:
    r = server.get("/metrics", server.reader)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert families, r.text
    for family in families.values():
        assert family.name.startswith("bastion_"), family.name
        assert family.documentation, family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if "seconds" in family.name or "bytes" in family.name:
            assert family.name.endswith(("_seconds", "_bytes")), family.name

    def samples(name: str, *labels: str) -> Counter[Any]:
        out: Counter[Any] = Counter()
        for s in families[name].samples:
            if s.name.endswith("_created"):
                continue
            key = tuple(s.labels[k] for k in labels)
            out[key[0] if len(key) == 1 else key] += int(s.value)
        return out

    want = _trail_counts(state_dir)
    assert samples("bastion_events", "kind") == want["events"]
    assert samples("bastion_verdicts", "severity", "action") == want["verdicts"]
    assert samples("bastion_verdict_categories", "category", "severity") == want["categories"]
    assert samples("bastion_actions", "action", "ok") == want["actions"]
    assert samples("bastion_gateway_connections", "decision") == want["connections"]
    assert samples("bastion_gateway_bytes", "decision", "direction") == want["bytes"]
    assert samples("bastion_dns_answers", "decision", "rcode") == want["dns"]
    assert samples("bastion_sessions_created", "run") == want["sessions"]
    assert samples("bastion_calls", "run", "outcome") == want["calls"]
    loss = Counter({k[0]: v for k, v in samples("bastion_telemetry_reports", "sensor",
                                                 "what").items() if k[1] == "loss"})
    assert loss == want["telemetry"]
    # the figures are not trivially zero
    assert want["verdicts"] and want["bytes"] and want["dns"] and want["connections"]
    states = samples("bastion_sessions", "run", "state")
    assert states == {("run-a", "closed"): 1, ("run-a", "live"): 1, ("run-b", "closed"): 1}
    assert families["bastion_sessions_live"].samples[0].value == 1
    records = samples("bastion_audit_log_records", "run")
    assert records == {"run-a": 66, "run-b": 26}
    assert samples("bastion_audit_unanchored_records", "run") == {"run-a": 0, "run-b": 0}
    ages = {s.labels["run"]: s.value
            for s in families["bastion_audit_checkpoint_age_seconds"].samples}
    assert set(ages) == {"run-a", "run-b"} and all(0 <= a < 300 for a in ages.values())
    assert {s.labels["run"]: s.value for s in families["bastion_audit_verify_ok"].samples} == {
        "run-a": 1.0, "run-b": 1.0}
    assert families["bastion_audit_read_lag_seconds"].type == "histogram"

    # a new record moves the counters by exactly one
    with open_test_trail(state_dir, "run-b") as trail:
        trail.append_verdict(verdict("run-b", "ep-9", "s-9", 1, "x.y", Severity.LOW, ()))

    def low() -> int:
        text = server.get("/metrics", server.reader).text
        fam = {f.name: f for f in text_string_to_metric_families(text)}["bastion_verdicts"]
        return int(sum(s.value for s in fam.samples if s.labels.get("severity") == "low"
                       and s.name.endswith("_total")))

    from tests.conftest import wait_for

    assert wait_for(lambda: low() == 1, timeout=30)


def test_a_client_that_falls_behind_is_told_and_counted(serve_factory: Any,
                                                        state_dir: Path) -> None:
    build_two_runs(state_dir)
    server = serve_factory(stream_queue=2)
    follower = SSEFollower(f"{server.url}/api/v1/stream", server.reader, {"types": "action"})
    try:
        assert follower.next(30, kind="hello")
        with open_test_trail(state_dir, "run-a", durable=False) as trail:
            # five records in ONE submission, so one commit, which the server reads in
            # one poll: five submissions could be committed (and polled) apart on a
            # fast machine, and a client that keeps up never falls behind
            trail.submit_events(action("run-a", "ep-2", "s-2", step) for step in range(5))
            trail.flush()
        got = [follower.next(30).event for _ in range(3)]
        assert got == ["action", "action", "dropped"]
    finally:
        follower.close()
    text = server.get("/metrics", server.reader).text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    dropped = [s.value for s in fams["bastion_serve_stream_dropped"].samples
               if s.name.endswith("_total")]
    assert dropped == [3.0]
