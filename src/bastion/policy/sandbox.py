"""The ``sandbox:`` section: filesystem view and resource limits of a session."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from ._base import Section, parse_duration, parse_size

__all__ = ["Limits", "SandboxPolicy"]

Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]

# Paths every session hides, whatever the policy says: home directories, host
# credentials and anything that belongs to bastion. A policy's `hidden` list adds to
# these; the state directory in use is hidden too (see sandbox/bwrap.py).
ALWAYS_HIDDEN = (
    "/root",
    "/home",
    "/etc/bastion",
    "/etc/ssh",
    "/var/lib/bastion",
    "/etc/shadow",
    "/etc/gshadow",
    "/sys/fs/bpf",
)


class Limits(Section):
    memory: Size = Field(default=2 * 1024**3, description="memory limit (e.g. 4GiB)")
    pids: int = Field(default=256, gt=0, description="maximum number of tasks")
    cpus: float = Field(default=2.0, gt=0, description="CPU quota in cores")
    exec_timeout: Duration = Field(default=600.0, description="per-call wall-clock limit")
    session_timeout: Duration = Field(default=3600.0, description="whole-session limit")


class SandboxPolicy(Section):
    rootfs: str = Field(default="/", description="read-only root filesystem")
    workspace: str | None = Field(
        default=None,
        description="read-write working tree; a fresh temporary directory when unset",
    )
    protected: list[str] = Field(default_factory=list, description="read-only paths")
    hidden: list[str] = Field(
        default_factory=list, description="more paths to mask (in addition to ALWAYS_HIDDEN)"
    )
    limits: Limits = Field(default_factory=Limits)
    env: dict[str, str] = Field(default_factory=dict, description="extra environment")
    hostname: str = "sandbox"
