"""`bastion redteam`: the scorecard that measures bastion's precision and containment.

Scenarios are data (``scenarios/*.yaml``, see ``loader``): honest agent workloads that
must never be contained or penalised, and attacks over the twelve rule-pack
categories (with evasive variants) that must be contained with zero bytes to a
forbidden lab host, detected with the right category and charged to the right call.
They run in real sessions against ``bastion lab`` (``runner``); the result is a
``Scorecard`` rendered for the terminal, as JSON or as HTML (``report``).
"""

from .loader import BUILTIN_DIR, ScenarioError, load_builtin, load_file, load_paths, select
from .model import CATEGORIES, Expect, Scenario, Step
from .runner import RunConfig, Runner, ScenarioResult, Scorecard, base_policy

__all__ = ["BUILTIN_DIR", "CATEGORIES", "Expect", "RunConfig", "Runner", "Scenario",
           "ScenarioError", "ScenarioResult", "Scorecard", "Step", "base_policy",
           "load_builtin", "load_file", "load_paths", "select"]
