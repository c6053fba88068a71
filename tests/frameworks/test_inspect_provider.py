"""The Inspect provider's own contract, beyond Inspect's self_check: registration
through the entry point, bastion.yaml found in the task directory, users, a closed
session, grader files that the agent cannot overwrite through write_file, task and
CLI cleanup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

pytest.importorskip("inspect_ai")

from inspect_ai import eval
from inspect_ai.log import read_eval_log
from inspect_ai.model import ModelOutput, ModelUsage, get_model
from inspect_ai.util import SandboxUserUnsupportedError
from inspect_ai.util._sandbox.environment import SandboxUnavailableError

from bastion import Session
from bastion.frameworks.inspect import BastionSandboxConfig, BastionSandboxEnvironment

pytestmark = pytest.mark.needs_root

@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_inspect_finds_the_provider_through_the_entry_point() -> None:
    from importlib.metadata import entry_points

    from inspect_ai._util.entrypoints import ensure_entry_points
    from inspect_ai.util._sandbox.registry import registry_find_sandboxenv

    [ep] = [e for e in entry_points(group="inspect_ai") if e.name == "bastion"]
    assert ep.value == "bastion.frameworks.inspect"
    ensure_entry_points()
    assert registry_find_sandboxenv("bastion") is BastionSandboxEnvironment


TASK_FILE = '''
from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import Score, scorer, accuracy
from inspect_ai.util import sandbox


@scorer(metrics=[accuracy()])
def whoami():
    async def score(state, target):
        r = await sandbox().exec(["sh", "-c", "pwd; id -un"])
        return Score(value=1, explanation=r.stdout)
    return score


@task
def dir_policy():
    return Task(dataset=[Sample(input="hi")], scorer=whoami(), sandbox="bastion")
'''


def test_a_bastion_yaml_in_the_task_directory_is_the_policy(
        tmp_path: Path, module_state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    (task_dir / "task.py").write_text(TASK_FILE)
    (task_dir / "bastion.yaml").write_text("name: from-the-task-dir\n")
    monkeypatch.setenv("BASTION_STATE_DIR", str(module_state))
    # from the task's parent, so the policy is found by the task's directory, not by the
    # cwd (a relative path: Inspect 0.3.285 cannot glob an absolute one on Python 3.11)
    monkeypatch.chdir(tmp_path)
    out = ModelOutput.from_content("mockllm/model", "hello")
    out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)  # no tiktoken
    model = get_model("mockllm/model", custom_outputs=[out])
    [log] = eval("task/task.py", model=model, display="none",
                 log_dir=str(tmp_path / "logs"))
    assert log.status == "success", log.error
    sample = read_eval_log(log.location).samples[0]
    assert sample.store["bastion"]["policy"] == "from-the-task-dir"
    assert sample.scores["whoami"].explanation.startswith("/workspace\n")


@pytest.mark.anyio
async def test_users_and_a_closed_session(module_state: Path) -> None:
    session = Session(None, state_dir=module_state)
    env = BastionSandboxEnvironment(session, "t")
    me = (await env.exec(["id", "-un"])).stdout.strip()
    uid = (await env.exec(["id", "-u"])).stdout.strip()
    assert (await env.exec(["id", "-un"], user=me)).stdout.strip() == me
    assert (await env.exec(["id", "-u"], user=uid)).success
    with pytest.raises(SandboxUserUnsupportedError, match="root"):
        await env.exec(["id"], user="root")
    await env.aclose()
    with pytest.raises(SandboxUnavailableError):
        await env.exec(["true"])
    with pytest.raises(SandboxUnavailableError):
        await env.read_file("x")


@pytest.mark.anyio
async def test_grader_files_cannot_be_overwritten_through_write_file(
        module_state: Path, tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "tests").mkdir(parents=True)
    (files / "tests" / "test_x.py").write_text("def test_x():\n    assert False\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("name: graded\nsandbox:\n  protected: [./tests]\n")
    cfg = BastionSandboxConfig(policy=str(policy), task_files=str(files),
                               state_dir=str(module_state))
    envs = await BastionSandboxEnvironment.sample_init("graded", cfg, {})
    env = envs["default"].as_type(BastionSandboxEnvironment)
    try:
        assert "assert False" in await env.read_file("tests/test_x.py")
        with pytest.raises(PermissionError, match="bastion refused"):
            await env.write_file("tests/test_x.py", "def test_x():\n    pass\n")
        assert {v.rule_id for v in env.verdicts()} >= {"reward_integrity.modify_grader"}
        # the file on the host side of the mask is untouched
        assert "assert False" in (env.session.workspace / "tests" / "test_x.py").read_text()
    finally:
        await BastionSandboxEnvironment.sample_cleanup("graded", cfg, envs, False)
    assert env.session.closed


@pytest.mark.anyio
async def test_task_cleanup_closes_sessions_a_sample_left_open(module_state: Path) -> None:
    cfg = BastionSandboxConfig(state_dir=str(module_state))
    envs = await BastionSandboxEnvironment.sample_init("leaky", cfg, {})
    env = envs["default"].as_type(BastionSandboxEnvironment)
    assert (await env.exec(["echo", "hi"])).stdout == "hi\n"
    await BastionSandboxEnvironment.task_cleanup("leaky", cfg, cleanup=True)
    assert env.session.closed


def test_cli_cleanup_removes_dead_sessions_only(module_state: Path) -> None:
    """What `inspect sandbox cleanup bastion STATE_DIR` calls."""
    code = ("import os\nfrom bastion import Session\n"
            f"s = Session(state_dir={str(module_state)!r})\n"
            "print(s.session_id, flush=True)\nos.kill(os.getpid(), 9)\n")
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False).stdout.strip()
    assert dead.startswith("s-")
    assert (module_state / "sessions" / dead).exists()
    with Session(None, state_dir=module_state) as live:
        anyio.run(BastionSandboxEnvironment.cli_cleanup, str(module_state))
        assert not (module_state / "sessions" / dead).exists()
        assert live.exec("echo alive").stdout == "alive\n"


def test_a_misspelt_config_key_is_an_error_not_the_default_policy() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="polcy"):
        BastionSandboxEnvironment.config_deserialize({"polcy": "strict.yaml"})


@pytest.mark.anyio
async def test_a_string_config_is_a_policy_file(tmp_path: Path, module_state: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """sandbox=("bastion", "policy.yaml")"""
    (tmp_path / "policy.yaml").write_text("name: from-a-string\n")
    monkeypatch.chdir(tmp_path)  # Inspect runs a task from its directory
    monkeypatch.setenv("BASTION_STATE_DIR", str(module_state))
    envs = await BastionSandboxEnvironment.sample_init("t", "policy.yaml", {})
    env = envs["default"].as_type(BastionSandboxEnvironment)
    try:
        assert env.session.policy.name == "from-a-string"
    finally:
        await BastionSandboxEnvironment.sample_cleanup("t", "policy.yaml", envs, False)
