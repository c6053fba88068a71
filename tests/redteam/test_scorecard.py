"""`make test`'s slice of the red-team scorecard: the fast suite in real sessions.

Each scenario's outcome is asserted on its own: a benign workload gets no containing
action and no RL penalty; an attack is contained with zero bytes to forbidden lab hosts,
detected with the right category and charged to the right call. Cases that bastion
does not get right yet are listed in KNOWN with the reason, as strict xfails: when the
detection is fixed the test XPASSes, fails, and the entry must be removed.
"""

from __future__ import annotations

import json

import pytest

from bastion.redteam import Scorecard, load_builtin, select
from bastion.redteam.report import render_html

# The session fixture runs the whole fast suite inside the first test's setup: ~2-3 min on
# a quiet 2-core machine, ~9 min at load 30-40; the project's 300 s per-test guard would
# cut it off on a slow host, so these tests get a longer one.
pytestmark = [pytest.mark.needs_root, pytest.mark.timeout(900)]

FAST = select(load_builtin(), suite="fast")

# scenario id -> why it fails today (the open misses are listed in BENCHMARKS.md)
KNOWN: dict[str, str] = {
    # a product decision, not a bug (precision first): a busy loop detached with nohup
    # and a `nohup python3 train.py &` polled later are the same behaviour, so
    # evidence-free background compute is only a low `detector.background_busy` note
    # until rules.detectors.background_kill_cpu_seconds (180 core-s); the kill path is
    # checked by attack.mining.detached_burn_strict_budget (budget 0.3 core-s)
    "attack.mining.detached_background_burn":
        "evidence-free background compute is noted, not killed, under the default budget",
}


def _params() -> list[object]:
    out = []
    for sc in FAST:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[sc.id])] if sc.id in KNOWN else []
        out.append(pytest.param(sc.id, marks=marks, id=sc.id))
    return out


@pytest.mark.parametrize("scenario_id", _params())
def test_scenario_outcome(fast_scorecard: Scorecard, scenario_id: str) -> None:
    (result,) = [r for r in fast_scorecard.results if r.id == scenario_id]
    assert result.error is None, result.error
    detail = "; ".join(result.problems)
    if result.kind == "benign":
        assert result.containing == 0, detail
        assert result.penalty == 0, detail
        assert result.status == "pass", detail  # and the work itself succeeded
    else:
        assert result.forbidden_bytes == 0, detail
        assert result.contained, detail
        assert result.right_category, detail
        assert result.right_call, detail


def test_no_byte_reached_a_forbidden_lab_host(fast_scorecard: Scorecard) -> None:
    """Measured at the far end: the lab firewall's per-host byte counters."""
    assert fast_scorecard.lab_bytes == {"ssh": 0, "pool": 0, "denied": 0}


def test_reports_carry_every_scenario(fast_scorecard: Scorecard) -> None:
    data = json.loads(json.dumps(fast_scorecard.to_dict(), default=str))
    assert data["schema"] == "bastion.redteam/1"
    assert {r["id"] for r in data["results"]} == {sc.id for sc in FAST}
    assert set(data["by_category"]) == {sc.category for sc in FAST if sc.kind == "attack"}
    page = render_html(fast_scorecard)
    for sc in FAST:
        assert sc.id in page
    summary = data["summary"]
    assert summary["benign"] == sum(sc.kind == "benign" for sc in FAST)
    assert summary["attacks"] == sum(sc.kind == "attack" for sc in FAST)


def test_benign_workloads_really_ran(fast_scorecard: Scorecard) -> None:
    """A workload that did not do its work (a broken scenario, a lab without its package
    index) must not count as a clean pass: its calls are checked with expect_exit."""
    for result in fast_scorecard.benign():
        if result.status == "pass":
            assert result.calls and all(c.problem is None for c in result.calls)
            assert all(c.outcome in ("ok", "exit_nonzero") for c in result.calls), result.id
