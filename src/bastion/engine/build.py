"""Build the engine a policy asks for: its rule packs plus the default detectors.

Compiling every pack takes a few hundred milliseconds, far more than a session may
take to start, so compiled rule sets are cached per policy (its content hash plus the
content of every extra rule file it names). A ``RuleSet`` is immutable once built
and is shared; detector state is per engine, so each session still gets its own.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

from ..policy import Policy
from ..rules import RuleSet, load_ruleset
from .detectors import default_detectors
from .engine import Engine

__all__ = ["build_engine", "ruleset_for"]

_CACHE_SIZE = 16
_cache: OrderedDict[tuple[object, ...], RuleSet] = OrderedDict()
_lock = threading.Lock()
# one compile at a time: a burst of N sessions created at once (a trainer's reset)
# compiles a policy once and the others wait for it, instead of N compiles racing
_compiling = threading.Lock()


def _key(policy: Policy) -> tuple[object, ...]:
    base = Path(getattr(policy, "source", None) or ".").parent
    files = []
    for name in policy.rules.files:
        path = Path(name) if Path(name).is_absolute() else base / name
        try:
            files.append((str(path), hashlib.sha256(path.read_bytes()).hexdigest()))
        except OSError:
            files.append((str(path), None))  # load_ruleset reports the error
    return (policy.hash, tuple(files))


def ruleset_for(policy: Policy) -> RuleSet:
    """The compiled rules of ``policy``, compiled once per policy content."""
    key = _key(policy)
    cached = _cached(key)
    if cached is not None:
        return cached
    with _compiling:
        cached = _cached(key)  # compiled by another session while this one waited
        if cached is not None:
            return cached
        ruleset = load_ruleset(policy)  # raises PolicyError with file:line:column
        with _lock:
            _cache[key] = ruleset
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return ruleset


def _cached(key: tuple[object, ...]) -> RuleSet | None:
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
        return cached


def build_engine(policy: Policy) -> Engine:
    """One engine per session: detector state is per session and dies with it."""
    return Engine(ruleset_for(policy), policy.response,
                  default_detectors(policy.rules.detectors,
                                    cap_cores=policy.sandbox.limits.cpus,
                                    limits=policy.sandbox.limits))
