"""The sandbox: bubblewrap namespaces, a seccomp filter and cgroup limits.

Internal: use ``bastion.Session``. The pieces are separate so each can be tested and
replaced alone: ``bwrap`` builds the command line, ``cgroups`` owns limits, kill and
freeze, ``seccomp`` compiles the syscall filter, ``supervisor`` runs inside, and
``sandbox`` ties them into one running sandbox.
"""

from .cgroups import CgroupHost, SessionCgroup
from .prereqs import check_prerequisites
from .sandbox import CallHandle, RawResult, Sandbox

__all__ = ["CallHandle", "CgroupHost", "RawResult", "Sandbox", "SessionCgroup", "check_prerequisites"]
