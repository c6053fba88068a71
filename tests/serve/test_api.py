"""The REST API of a real ``bastion serve`` over real audit logs: authentication on
every route, filters, run-scoped tokens, the OpenAPI document, property-based
requests that must never get a 5xx, and operator actions recorded in the trail."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.audit import verify_state_dir
from bastion.audit.reader import open_logs

from .conftest import Server
from .trails import build_two_runs


@pytest.fixture
def server(serve_factory: Any, state_dir: Path) -> Server:
    build_two_runs(state_dir)
    return serve_factory(verify_interval=3600.0)


def _routes(server: Server) -> list[tuple[str, str]]:
    doc = server.get("/api/v1/openapi.json", server.reader).json()
    out = []
    for path, ops in doc["paths"].items():
        concrete = path.replace("{episode_id}", "ep-1").replace("{policy_hash}", "x")
        out += [(method.upper(), concrete) for method in ops]
    return out


def test_nothing_but_healthz_answers_without_a_valid_token(server: Server) -> None:
    assert server.get("/healthz").json() == {"status": "ok", "detail": ""}
    routes = _routes(server) + [("GET", "/api/v1/openapi.json"), ("GET", "/ui"),
                                ("GET", "/"), ("GET", "/ui/episodes/ep-1"),
                                ("GET", "/ui/fragments/overview")]
    assert ("GET", "/metrics") in routes and ("GET", "/api/v1/stream") in routes
    checked = 0
    c = httpx.Client(base_url=server.url, timeout=30)
    for method, path in routes:
        if path == "/healthz":
            continue
        for headers in ({}, {"Authorization": "Bearer bst_wrong"},
                        {"Authorization": "Basic YWRtaW46YWRtaW4="}):
            r = c.request(method, path, headers=headers,
                          json={"action": "freeze"} if method == "POST" else None)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
            assert r.headers.get("www-authenticate") == "Bearer"
            checked += 1
    c.close()
    assert checked >= 3 * 20
    # the cookie is a token like any other: a wrong one is refused too
    with httpx.Client(base_url=server.url, cookies={"bastion_token": "bst_wrong"}) as c:
        assert c.get("/api/v1/verdicts").status_code == 401


def test_a_run_token_reads_its_run_only(server: Server) -> None:
    token = server.run_token("run-b")
    runs = server.get("/api/v1/runs", token).json()
    assert [r["run_id"] for r in runs] == ["run-b"]
    assert {v["run_id"] for v in server.get("/api/v1/verdicts", token).json()} == {"run-b"}
    assert {e["episode_id"] for e in server.get("/api/v1/episodes", token).json()} == {"ep-9"}
    assert server.get("/api/v1/episodes/ep-1", token).status_code == 404
    assert server.get("/ui/episodes/ep-1", token).status_code == 404
    assert {e["run_id"] for e in server.get("/api/v1/events", token, limit=1000).json()} == {
        "run-b"}
    assert server.get("/api/v1/events", token, run="run-a").json() == []
    assert [a["run_id"] for a in server.get("/api/v1/audit", token).json()] == ["run-b"]
    assert server.get("/metrics", token).status_code == 403  # metrics span every run
    assert server.get("/metrics", server.reader).status_code == 200


def test_filters(server: Server) -> None:
    def verdicts(**params: Any) -> list[dict[str, Any]]:
        r = server.get("/api/v1/verdicts", server.reader, **params)
        assert r.status_code == 200, r.text
        return r.json()

    everything = verdicts()
    assert len(everything) == 5  # ep-1: 2, ep-2: 2, ep-9: 1
    assert {(v["episode_id"], v["step"], v["call_id"]) for v in verdicts(run="run-a")} == {
        ("ep-1", 2, "c2"), ("ep-1", 3, "c3"), ("ep-2", 2, "c2"), ("ep-2", 3, "c3")}
    assert [v["rule_id"] for v in verdicts(episode="ep-9")] == ["mining.stratum"]
    assert {v["rule_id"] for v in verdicts(step=3)} == {"tunnels.ssh_reverse"}
    assert len(verdicts(severity="critical")) == 3
    assert len(verdicts(severity="high")) == 5
    assert {v["episode_id"] for v in verdicts(category="exfiltration")} == {"ep-1", "ep-2"}
    assert verdicts(category="nothing-like-this") == []
    assert len(verdicts(limit=2)) == 2 and verdicts(limit=2, offset=4) == everything[4:]
    assert server.get("/api/v1/verdicts", server.reader, severity="bogus").status_code == 422

    eps = server.get("/api/v1/episodes", server.reader).json()
    assert {e["episode_id"]: e["state"] for e in eps} == {"ep-1": "closed", "ep-2": "live",
                                                         "ep-9": "closed"}
    assert [e["episode_id"] for e in server.get("/api/v1/episodes", server.reader,
                                                 state="live").json()] == ["ep-2"]
    calls = server.get("/api/v1/calls", server.reader, episode="ep-2", step=2).json()
    assert [(c["call_id"], c["outcome"], c["worst"]) for c in calls] == [
        ("c2", "killed", "critical")]
    events = server.get("/api/v1/events", server.reader, run="run-a", episode="ep-1",
                        kind="net.connect").json()
    assert [(e["step"], e["fields"]["net.decision"]) for e in events] == [
        (0, "allow"), (1, "allow"), (2, "deny"), (3, "deny")]
    after = server.get("/api/v1/events", server.reader, run="run-a",
                       after=events[1]["seq"], kind="net.connect", episode="ep-1").json()
    assert [e["step"] for e in after] == [2, 3]
    steps = {s["step"]: s for s in server.get("/api/v1/stats/steps", server.reader).json()}
    assert steps[2]["violating_calls"] == 3 and steps[2]["calls"] == 3
    assert steps[3]["by_category"] == {"tunnel": 2, "exfiltration": 2}
    assert steps[0]["rate"] == 0.0
    actions = server.get("/api/v1/actions", server.reader, episode="ep-1").json()
    assert [a["name"] for a in actions] == ["kill", "kill"]
    policies = server.get("/api/v1/policies", server.reader, run="run-b").json()
    detail = server.get(f"/api/v1/policies/{policies[0]['hash']}", server.reader).json()
    assert "sandbox" in detail["text"]
    audit = {a["run_id"]: a for a in server.get("/api/v1/audit", server.reader).json()}
    assert audit["run-a"]["records"] == 66 and audit["run-a"]["verify"]["ok"] is True
    assert audit["run-a"]["unanchored_records"] == 0


def test_openapi_document_is_valid(server: Server) -> None:
    from openapi_spec_validator import validate

    doc = server.get("/api/v1/openapi.json", server.reader).json()
    validate(doc)
    assert doc["info"]["version"] == "1.0.0"
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, ops in doc["paths"].items():
        if path != "/healthz":
            assert all(op.get("security") for op in ops.values()), path


_text = st.one_of(st.none(), st.sampled_from(["run-a", "ep-1", "c2", "net.connect", "mining"]),
                  st.text(max_size=30))
_number = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63),
                    st.sampled_from(["", "x", "1e9", "-1"]))


def test_property_based_requests_never_get_a_5xx(server: Server) -> None:
    """Every GET route and the action route, with arbitrary values for each parameter
    the OpenAPI document declares (and a few it does not): 2xx or 4xx, never 5xx."""
    doc = server.get("/api/v1/openapi.json", server.reader).json()
    gets = [(p, ops["get"]) for p, ops in doc["paths"].items()
            if "get" in ops and p not in ("/api/v1/stream",)]
    client = httpx.Client(base_url=server.url, timeout=30,
                          headers={"Authorization": f"Bearer {server.reader}"})

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data: st.DataObject) -> None:
        path, op = data.draw(st.sampled_from(gets))
        params: dict[str, Any] = {}
        for param in op.get("parameters", []):
            strategy = _number if param.get("schema", {}).get("type") == "integer" else _text
            value = data.draw(strategy, label=param["name"])
            if param["in"] == "path":
                path = path.replace("{" + param["name"] + "}", str(value or "x"))
            elif value is not None:
                params[param["name"]] = value
        r = client.get(path, params=params)
        assert r.status_code < 500, (path, params, r.status_code, r.text)

    try:
        check()
        body = st.fixed_dictionaries({"action": st.one_of(st.sampled_from(
            ["freeze", "terminate", "quarantine", "network_phase", "nope"]), st.integers()),
            "reason": st.one_of(st.text(max_size=600), st.none()),
            "phase": st.one_of(st.none(), st.text(max_size=20))})

        @settings(max_examples=12, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(body, st.sampled_from(["ep-1", "ep-9", "nope", "%00"]))
        def post(payload: dict[str, Any], episode: str) -> None:
            r = server.post(f"/api/v1/episodes/{episode}/actions", server.admin, json=payload)
            assert r.status_code < 500 or r.status_code == 501, (payload, r.text)

        post()
    finally:
        client.close()


def _operator_records(state_dir: Path, run: str) -> list[dict[str, Any]]:
    found = []
    for log in open_logs(state_dir, run):
        with log:
            for r in log.records(types=("action",)):
                if r.data["fields"].get("action.rule") == "operator":
                    found.append({**r.data["fields"], "seq": r.seq})
    return found


def test_operator_actions_need_the_admin_token_and_are_recorded(server: Server,
                                                                 state_dir: Path) -> None:
    url = "/api/v1/episodes/ep-2/actions"
    body = {"action": "freeze", "reason": "looks like mining"}
    assert server.post(url, json=body).status_code == 401
    r = server.post(url, server.reader, json=body)
    assert r.status_code == 403 and r.json()["stage"] == "refused"
    # the dashboard cookie never authorises an action, even the admin's
    with httpx.Client(base_url=server.url, cookies={"bastion_token": server.admin}) as c:
        assert c.get("/api/v1/runs").status_code == 200  # the cookie reads
        r = c.post(url, json=body)
    assert r.status_code == 401
    # a standalone server holds no session handles: recorded, then 501
    r = server.post(url, server.admin, json=body)
    assert r.status_code == 501, r.text
    assert "no live session handle in this process" in r.json()["detail"]
    last = r.json()["seq"]
    # unknown episode: nothing to act on, nothing recorded
    assert server.post("/api/v1/episodes/ep-404/actions", server.admin,
                       json=body).status_code == 404

    records = _operator_records(state_dir, "run-a")
    assert [(x["operator.stage"], x["action.ok"], x["operator.principal"]) for x in records] == [
        ("refused", False, "(none)"), ("refused", False, "test-reader"),
        ("refused", False, "(none)"), ("requested", False, "test-admin"),
        ("not carried out", False, "test-admin")]
    assert all(x["action.name"] == "operator.freeze" and x["action.target"] == "ep-2"
               and x["operator.reason"] == "looks like mining" for x in records)
    assert records[-1]["seq"] == last
    # the server's appends extend the run's chain; the log still verifies
    assert all(v.ok for v in verify_state_dir(state_dir))
    # and the API shows them (the poller picks them up like any other record)
    from tests.conftest import wait_for

    assert wait_for(lambda: len([a for a in server.get(
        "/api/v1/actions", server.reader, episode="ep-2").json() if a["operator"]]) == 5)


def test_tokens_file_is_private(server: Server, state_dir: Path) -> None:
    path = state_dir / "serve" / "tokens.json"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    assert server.admin not in path.read_text()  # digests only


def test_a_session_that_vanished_without_closing_is_lost(server: Server,
                                                         state_dir: Path) -> None:
    """ep-2 never recorded its end; while its session directory exists it is live,
    once the directory is gone (its process died) it is shown as lost."""
    from tests.conftest import wait_for

    assert server.get("/api/v1/episodes/ep-2", server.reader).json()["state"] == "live"
    (state_dir / "sessions" / "s-2").rmdir()
    assert wait_for(lambda: server.get("/api/v1/episodes/ep-2", server.reader).json()[
        "state"] == "lost", timeout=30)
    assert server.get("/api/v1/sessions", server.reader, state="lost").json()[0][
        "session_id"] == "s-2"


def test_refusals_from_one_client_are_recorded_up_to_an_allowance(
        server: Server, state_dir: Path) -> None:
    """Anyone who can reach the port can be refused; a flood of refusals must not
    flood the audit trail. The first 20 are recorded, the rest counted, and the count
    goes into the client's next recorded refusal."""
    url = "/api/v1/episodes/ep-1/actions"
    seqs = [server.post(url, json={"action": "terminate"}).json()["seq"] for _ in range(25)]
    assert all(s >= 0 for s in seqs[:20]) and seqs[20:] == [-1] * 5
    records = _operator_records(state_dir, "run-a")
    assert len(records) == 20
    limiter = server.app.state.ctx.refusals
    record, suppressed = limiter.admit("127.0.0.1", time.monotonic() + 3600)
    assert record and suppressed == 5
