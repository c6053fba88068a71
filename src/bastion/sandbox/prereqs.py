"""Up-front checks, so that a host that cannot sandbox fails with one actionable line."""

from __future__ import annotations

import os
import shutil

from ..errors import SandboxUnavailable

__all__ = ["check_prerequisites"]


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            "bastion must run as root (it creates cgroups and network namespaces and "
            "drops each sandbox to its own uid); run it with sudo"
        )
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable(
            "bubblewrap is not installed: run `make demo` once, or `apt-get install bubblewrap`"
        )
    try:
        max_userns = int(open("/proc/sys/user/max_user_namespaces").read())
    except (OSError, ValueError):
        max_userns = 1
    if max_userns == 0:
        raise SandboxUnavailable(
            "user namespaces are disabled: `sysctl -w user.max_user_namespaces=65536`"
        )
    if not os.path.isdir("/sys/fs/cgroup"):
        raise SandboxUnavailable("no cgroup filesystem at /sys/fs/cgroup")
