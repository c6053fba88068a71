"""bastion: contain, watch, record and stop autonomous agents that run code.

Layering (data flows one way): sandbox -> sensors -> engine -> responder -> audit.
This module is the whole public API; everything in subpackages is internal and may
change between releases.
"""

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

__all__ = [
    "Action",
    "BastionError",
    "Event",
    "EventKind",
    "ExecResult",
    "InternalError",
    "Outcome",
    "Policy",
    "PolicyError",
    "SandboxUnavailable",
    "Session",
    "SessionBroken",
    "SessionClosed",
    "Severity",
    "Verdict",
]
