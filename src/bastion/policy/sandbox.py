"""The ``sandbox:`` section: filesystem view and resource limits of a session."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from ._base import Section, parse_duration, parse_size
from .mounts import Mount

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
    "/etc/ssl/private",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/security/opasswd",
)


class Limits(Section):
    memory: Size = Field(default=2 * 1024**3, description="memory limit (e.g. 4GiB)")
    pids: int = Field(default=256, gt=0, description="maximum number of tasks")
    cpus: float = Field(default=2.0, gt=0, description="CPU quota in cores")
    disk: Size = Field(
        default=1024**3, gt=0,
        description="bytes the session may store in each of its writable filesystems "
                    "(the workspace bastion creates, and /tmp + /var/tmp + /dev/shm); "
                    "memory-backed, so it counts against the memory limit as well",
    )
    inodes: int = Field(default=262_144, gt=0,
                        description="files and directories per writable filesystem")
    exec_timeout: Duration = Field(default=600.0, description="per-call wall-clock limit")
    session_timeout: Duration = Field(default=3600.0, description="whole-session limit")


class SandboxPolicy(Section):
    rootfs: str = Field(default="/", description="read-only root filesystem")
    image: str | None = Field(
        default=None,
        description="container image the session runs in, instead of rootfs: an OCI "
                    "layout directory (DIR[:TAG]), a `docker save` or OCI archive, or a "
                    "skopeo local transport; seen through a per-session copy-on-write "
                    "overlay (see bastion.image)",
    )
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
    mounts: list[Mount] = Field(
        default_factory=list,
        description="extra host directories: [{source, target, mode: ro|rw}] (datasets, caches)",
    )
    hostname: str = "sandbox"
