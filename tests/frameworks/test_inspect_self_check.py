"""Inspect AI's own conformance suite for sandbox providers (44 checks, written by
Inspect's authors, not by us) against bastion sessions: the default policy, and a
task image. Known failures are strict xfails, each with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

pytest.importorskip("inspect_ai")

from inspect_ai.util._sandbox import self_check
from inspect_ai.util._sandbox.self_check import *

from bastion.frameworks.inspect import BastionSandboxConfig, BastionSandboxEnvironment

pytestmark = [pytest.mark.anyio, pytest.mark.needs_root]

CHECKS = sorted(self_check.__all__)

XFAIL: dict[str, str] = {
    "test_exec_as_user": (
        "bastion runs every call as the session's one unprivileged user (no root, no "
        "setuid inside); user='root' raises SandboxUserUnsupportedError, so adduser "
        "cannot run"),
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=["default", "image"])
def _bastion_env(request: pytest.FixtureRequest, module_state: Path
                 ) -> Iterator[BastionSandboxEnvironment]:
    """One session per configuration, opened the way an eval opens it (sample_init
    with the provider's config), shared by the module's checks."""
    image = request.getfixturevalue("task_image") if request.param == "image" else None
    config = BastionSandboxConfig(state_dir=str(module_state),
                                  image=str(image) if image else None)
    envs = anyio.run(BastionSandboxEnvironment.sample_init, "self-check", config, {})
    env = envs["default"].as_type(BastionSandboxEnvironment)
    if image is not None:
        assert env.session.image_view is not None
    yield env
    anyio.run(BastionSandboxEnvironment.sample_cleanup, "self-check", config, envs, False)
    assert env.session.closed


@pytest.fixture
def sandbox_env(request: pytest.FixtureRequest, _bastion_env: BastionSandboxEnvironment
                ) -> BastionSandboxEnvironment:
    reason = XFAIL.get(request.node.originalname)
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    return _bastion_env


def test_suite_size() -> None:
    """The suite this file runs is the one the issue names (44 checks); a new Inspect
    release that adds checks shows up here, to be counted in the closing note."""
    assert len(CHECKS) >= 44, CHECKS
    assert set(XFAIL) <= set(CHECKS)
