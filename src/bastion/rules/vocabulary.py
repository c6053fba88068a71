"""The shared vocabulary (``vocabulary.yaml``): one list per class of program and path.

The rule loader compiles it before every pack, so every pack's conditions can name its
lists; the command analyser reads the same file through ``vocabulary()``, so "which
programs are shells" has exactly one answer in bastion. Only the YAML's ``list`` items
are read here (nested list names are expanded), with no rule compilation, so the
analyser can import it without importing the rule engine.
"""

from __future__ import annotations

from functools import lru_cache

import yaml

from .loader_source import VOCABULARY_FILE, vocabulary_source

__all__ = ["VOCABULARY_FILE", "vocabulary", "vocabulary_source"]


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, frozenset[str]]:
    """Every list of the vocabulary, by name, with nested list names expanded."""
    raw: dict[str, list[str]] = {}
    for item in yaml.load(vocabulary_source().text,
                          Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or []:
        if isinstance(item, dict) and "list" in item:
            raw[str(item["list"])] = [str(v) for v in item.get("items") or []]

    def expand(name: str, seen: frozenset[str]) -> set[str]:
        out: set[str] = set()
        for v in raw[name]:
            if v in raw and v not in seen:
                out |= expand(v, seen | {v})
            else:
                out.add(v)
        return out

    return {name: frozenset(expand(name, frozenset({name}))) for name in raw}
