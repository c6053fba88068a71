"""Where the always-loaded vocabulary lives (kept apart so that reading it needs no engine)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

__all__ = ["VOCABULARY_FILE", "VocabularySource", "vocabulary_source"]

VOCABULARY_FILE = "vocabulary.yaml"


@dataclass(frozen=True)
class VocabularySource:
    name: str
    file: str
    text: str


def vocabulary_source() -> VocabularySource:
    path = resources.files("bastion.rules") / VOCABULARY_FILE
    return VocabularySource("vocabulary", str(path), path.read_text())
