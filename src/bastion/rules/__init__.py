"""The rule language: YAML packs compiled into one callable per rule, indexed by kind.

Interface the engine consumes (stable; changes here are breaking)::

    load_ruleset(policy: Policy) -> RuleSet
        Loads the built-in packs named in policy.rules.packs and the extra files in
        policy.rules.files (relative to the policy file), applies policy.rules.overrides
        (an unknown rule id, a bad condition or action is a PolicyError), compiles.
        Raises PolicyError with file:line:column for every syntax, field or key error.

    class RuleSet:
        rules: list[Rule]              # every rule, enabled or not, in load order
        policy_hash: str               # "sha256:..." over the policy hash + all rule files
        packs: tuple[str, ...]
        match(event: Event) -> list[RuleMatch]      # enabled rules that hold, pack order
        matching_rule_ids(event: Event) -> list[str]
        rule(rule_id: str) -> Rule
        statistics() -> RuleSetStatistics           # frozen snapshot

    @dataclass(frozen=True) class RuleMatch:
        rule_id: str
        severity: Severity
        message: str                   # the rule's output with %field substituted
        categories: tuple[str, ...]
        mitre: tuple[str, ...]         # tags shaped like T1059 / T1059.004
        action: Action | None          # the rule's (or override's) action, else None
        evidence: Mapping[str, Any]    # the fields the rule read, as seen in the event

    class RuleSetHolder(ruleset):      # atomic reload
        current -> RuleSet; generation -> int; policy_hash -> str
        match(event) -> list[RuleMatch]       # uses one snapshot per call
        swap(ruleset) -> RuleSet (the old one); reload(policy) -> RuleSet

Condition grammar and semantics: see ``condition`` and ``compile``. Pack format: see
``loader``. Rule test cases (``tests: {match, no_match}``) are run by
``bastion.rules.testing.run_rule_tests``; a string case is a command (analysed like a
submitted tool call), a mapping case is an event given by its fields plus ``kind``.
"""

from __future__ import annotations

from .loader import ENGINE_VERSION as ENGINE_VERSION
from .loader import PackSource as PackSource
from .loader import builtin_pack_names as builtin_pack_names
from .loader import compile_sources as compile_sources
from .loader import load_ruleset as load_ruleset
from .ruleset import Rule as Rule
from .ruleset import RuleMatch as RuleMatch
from .ruleset import RuleSet as RuleSet
from .ruleset import RuleSetHolder as RuleSetHolder
from .ruleset import RuleSetStatistics as RuleSetStatistics

__all__ = [
    "ENGINE_VERSION",
    "PackSource",
    "Rule",
    "RuleMatch",
    "RuleSet",
    "RuleSetHolder",
    "RuleSetStatistics",
    "builtin_pack_names",
    "compile_sources",
    "load_ruleset",
]
