"""`bastion run --image`: a command in a task image from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _bastion(args: list[str], state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args], capture_output=True, check=False,
                          text=True, timeout=120, env={**os.environ, "BASTION_STATE_DIR": str(state)})


def test_run_in_image(image_state: Path, busybox_layout: Path) -> None:
    r = _bastion(["run", "--image", f"{busybox_layout}:v1", "--", "sh", "-c",
                  "cat /opt/data/f.txt; pwd"], image_state)
    assert r.returncode == 0 and r.stdout == "second layer\n/opt\n", r.stderr


def test_missing_image_is_one_clear_line(image_state: Path, tmp_path: Path) -> None:
    r = _bastion(["run", "--image", str(tmp_path / "nope.tar"), "--", "true"], image_state)
    assert r.returncode != 0
    assert "no image at" in r.stderr and "Traceback" not in r.stderr
