"""Replay through real sessions: record an episode, re-run it under the recorded policy
(same verdicts) and under a changed policy (the differing call is named)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from bastion import Action, Event, EventKind, Policy, Session, Severity, Verdict
from bastion.audit import open_trail
from bastion.audit.replay import replay_episode
from bastion.audit.report import build_report
from bastion.cli import app


class KeywordEngine:
    """A small policy-driven engine until the real one lands: commands naming a miner
    are denied; a policy named "strict" also flags `curl`."""

    def __init__(self, policy: Policy) -> None:
        self.policy_hash = policy.hash
        self.words = {"xmrig": (Severity.CRITICAL, Action.DENY)}
        if policy.name == "strict":
            self.words["curl"] = (Severity.MEDIUM, Action.ALERT)

    def evaluate(self, event: Event) -> list[Verdict]:
        if event.kind is not EventKind.COMMAND:
            return []
        raw = str(event.get("cmd.raw", ""))
        return [Verdict(f"kw.{word}", sev, f"command names {word}", action=act,
                        policy_hash=self.policy_hash, session_id=event.session_id,
                        run_id=event.run_id, episode_id=event.episode_id, step=event.step,
                        call_id=event.call_id, event_ids=(event.id,))
                for word, (sev, act) in self.words.items() if word in raw]


COMMANDS = ["echo hello", "curl --version >/dev/null 2>&1; true", "./xmrig --donate-level 0",
            "ls /"]


def _record(state: Path) -> Policy:
    policy = Policy.default()
    trail = open_trail(state, "replay-src")
    trail.append_policy(policy, episode_id="ep-r")
    with Session(policy, run_id="replay-src", episode_id="ep-r", state_dir=state,
                 recorder=trail, engine=KeywordEngine(policy)) as session:
        results = [session.exec(cmd, step=i) for i, cmd in enumerate(COMMANDS)]
    trail.close()
    assert [r.outcome.value for r in results] == ["ok", "ok", "denied", "ok"]
    return policy


def test_replay_same_policy_same_verdicts(state_dir: Path) -> None:
    policy = _record(state_dir)
    result = replay_episode(state_dir, "ep-r", engine_factory=KeywordEngine)
    assert result.recorded_policy == policy.hash == result.replay_policy
    assert [c.command for c in result.calls] == COMMANDS
    assert result.differences == []
    assert result.calls[2].recorded == (("kw.xmrig", "deny"),) == result.calls[2].replayed
    assert [c.replayed_outcome for c in result.calls] == ["ok", "ok", "denied", "ok"]
    assert [c.recorded_outcome for c in result.calls] == ["ok", "ok", "denied", "ok"]


def test_replay_new_policy_shows_the_difference(state_dir: Path, tmp_path: Path) -> None:
    _record(state_dir)
    strict = Policy.from_dict({"name": "strict"})
    result = replay_episode(state_dir, "ep-r", policy=strict, engine_factory=KeywordEngine)
    assert result.replay_policy == strict.hash != result.recorded_policy
    (diff,) = result.differences
    assert (diff.step, diff.call_id) == (1, "c1")
    assert diff.recorded == () and diff.replayed == (("kw.curl", "alert"),)


def test_real_session_report_and_cli_replay(state_dir: Path) -> None:
    _record(state_dir)
    report = build_report(state_dir, "ep-r")
    assert [c.command for c in report.calls] == COMMANDS
    assert [c.outcome for c in report.calls][:2] == ["ok", "ok"]
    assert report.calls[2].outcome == "denied"
    assert [v.rule_id for v in report.calls[2].verdicts] == ["kw.xmrig"]
    assert any(e.fields.get("life.state") == "closing" for e in report.lifecycle)
    cli = CliRunner().invoke(app, ["replay", "ep-r", "--state-dir", str(state_dir)],
                             env={"COLUMNS": "250"})
    assert cli.exit_code == 0, cli.output
    assert "kw.xmrig->deny" in cli.stdout  # the recorded verdict is listed
    assert "of 4 call(s) differ" in cli.stdout
