"""bastion: contain, watch, record and stop autonomous agents that run code.

Layering (data flows one way): sandbox -> sensors -> engine -> responder -> audit.
This module is the whole public API; everything in subpackages is internal and may
change between releases.

The names are resolved on first use (PEP 562), so that ``import bastion.policy`` or a
one-shot ``bastion check`` does not pay for the sandbox, the sensors and netlink: the
command line starts in a fraction of the time.
"""

from __future__ import annotations

import importlib as _importlib

# not `typing.TYPE_CHECKING`: importing typing costs a one-shot `bastion run` ~10 ms
_TYPE_CHECKING = False
if _TYPE_CHECKING:
    from typing import Any as _Any

    from .aio import AsyncSession as AsyncSession
    from .errors import BastionError as BastionError
    from .errors import InternalError as InternalError
    from .errors import PolicyError as PolicyError
    from .errors import SandboxUnavailable as SandboxUnavailable
    from .errors import SessionBroken as SessionBroken
    from .errors import SessionClosed as SessionClosed
    from .events import Action as Action
    from .events import Event as Event
    from .events import EventKind as EventKind
    from .events import Severity as Severity
    from .events import Verdict as Verdict
    from .policy import Policy as Policy
    from .results import ExecResult as ExecResult
    from .results import Outcome as Outcome
    from .session import Session as Session

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Action": ".events",
    "AsyncSession": ".aio",
    "BastionError": ".errors",
    "Event": ".events",
    "EventKind": ".events",
    "ExecResult": ".results",
    "InternalError": ".errors",
    "Outcome": ".results",
    "Policy": ".policy",
    "PolicyError": ".errors",
    "SandboxUnavailable": ".errors",
    "Session": ".session",
    "SessionBroken": ".errors",
    "SessionClosed": ".errors",
    "Severity": ".events",
    "Verdict": ".events",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bastion' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
