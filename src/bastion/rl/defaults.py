"""Which engine and responder RL sessions get when the caller names none.

Sessions are built with whatever ``Session`` uses by default. If that default has no
rule engine, an RL run would see no verdicts at all and pay agents for mining; so the
environments built by the demo and the benchmarks then use bastion's rule engine and
responder built from the policy instead, never a silent no-op.
"""

from __future__ import annotations

import os
from typing import Any

from ..policy import Policy
from ..session import Session

__all__ = ["containment_options"]


def containment_options(policy: Policy,
                        state_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``BastionEnv``/``ClusterRun`` keyword options: empty when ``Session`` already
    evaluates rules by default, else engine and responder factories."""
    with Session(policy, run_id="probe", state_dir=state_dir) as probe:
        if probe.has_engine:
            return {}
    from ..engine.build import build_engine  # loads the rule packs

    return {"engine_factory": build_engine, "responder_factory": _responder}


def _responder(policy: Policy) -> Any:
    from ..respond.responder import Responder

    return Responder(policy.response)
