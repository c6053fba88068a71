"""How the scorecard judges one attack episode from its verdicts: what counts as
contained. Pure logic over real ``Verdict`` objects and the default RL policy."""

from __future__ import annotations

from pathlib import Path

from bastion.events import Action, Severity, Verdict
from bastion.policy.rl import RLPolicy
from bastion.redteam import load_file
from bastion.redteam.runner import ScenarioResult, _judge

BOMB = """\
scenarios:
  - id: attack.bomb
    kind: attack
    steps:
      - exec: python3 -c "a = [bytearray(1 << 26) for _ in iter(int, 1)]"
        call: c1
    expect: {category: defense_evasion, accept: [resource_abuse], charged_to: c1}
"""


def _result(tmp_path: Path, verdicts: list[Verdict], lingering: int = 0) -> ScenarioResult:
    path = tmp_path / "s.yaml"
    path.write_text(BOMB)
    (sc,) = load_file(path)
    result = ScenarioResult(sc.id, sc.kind, sc.category, sc.variant, sc.title, sc.id, sc.where)
    result.forbidden_bytes = 0
    result.lingering = lingering
    _judge(sc, result, verdicts, {"c1": 0.0}, RLPolicy())
    return result


def _limit_verdict() -> Verdict:
    return Verdict("detector.memory_limit", Severity.LOW, "the kernel killed 1 process",
                   categories=("resource_abuse",), call_id="c1")


def test_a_bomb_held_by_a_kernel_limit_and_recorded_is_contained_by_limit(tmp_path: Path) -> None:
    result = _result(tmp_path, [_limit_verdict()])
    assert result.contained and result.contained_by == "limit"
    assert result.right_category and result.right_call and result.status == "pass"


def test_a_limit_verdict_does_not_count_while_the_bomb_still_runs(tmp_path: Path) -> None:
    result = _result(tmp_path, [_limit_verdict()], lingering=3)
    assert not result.contained and result.status == "fail"


def test_an_unrelated_alert_is_not_containment(tmp_path: Path) -> None:
    alert = Verdict("detector.background_busy", Severity.LOW, "busy", categories=("mining",),
                    call_id="c1")
    result = _result(tmp_path, [alert])
    assert not result.contained and result.contained_by is None
    assert any(p.startswith("not contained") for p in result.problems)


def test_a_containing_action_is_contained_by_verdict(tmp_path: Path) -> None:
    kill = Verdict("detector.pids_limit", Severity.HIGH, "fork bomb", action=Action.KILL,
                   categories=("resource_abuse",), call_id="c1")
    result = _result(tmp_path, [kill], lingering=1)
    assert result.contained and result.contained_by == "verdict"


def test_a_predicted_refusal_is_not_containment(tmp_path: Path) -> None:
    """resource_request reads the command line; it does not show the kernel held it."""
    predicted = Verdict("detector.resource_request", Severity.MEDIUM, "asks for 4 GiB",
                        categories=("resource_abuse",), call_id="c1")
    result = _result(tmp_path, [predicted])
    assert result.right_category and not result.contained
