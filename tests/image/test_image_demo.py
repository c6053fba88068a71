"""The image chapter of `make demo` does what it narrates (non-zero if not)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from bastion.image.demo import chapter_image


def test_image_chapter(image_state: Path) -> None:
    out = io.StringIO()
    assert chapter_image(Console(file=out, width=400), str(image_state)) == 0
    text = out.getvalue()
    assert "no python3 in the image" in text and "modified /testbed/calc.sh" in text
    assert "reward_integrity" in text  # the grader edit was seen and named
