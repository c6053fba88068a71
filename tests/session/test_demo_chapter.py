"""The first chapter of `make demo` does what it narrates (it returns non-zero if not)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from bastion.demo import chapter_containment

pytestmark = pytest.mark.needs_root


def test_containment_chapter(state_dir: Path) -> None:
    out = io.StringIO()
    assert chapter_containment(Console(file=out, width=100), str(state_dir)) == 0
    text = out.getvalue()
    for step in ("write a file", "fork bomb", "memory hog", "leave a daemon behind"):
        assert step in text
    assert "killed" in text and "memory limit" in text
    assert "after close: 0 of them left" in text
