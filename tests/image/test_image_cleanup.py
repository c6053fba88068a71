"""A bastion process that dies with an image session open leaves mounts (overlay,
upper-layer tmpfs) behind: `bastion cleanup` removes them, the cache stays intact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bastion.image import cache_for
from bastion.sandbox.scratch import mounts_below


def test_cleanup_unmounts_a_dead_image_session(image_state: Path, busybox_layout: Path) -> None:
    code = ("import os\nfrom bastion import Session\n"
            f"s = Session(state_dir={str(image_state)!r}, image={f'{busybox_layout}:v1'!r})\n"
            "s.exec('echo x > /opt/left')\nprint(s.session_id, flush=True)\n"
            "os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, text=True,
                          timeout=120)
    sid = proc.stdout.strip()
    assert sid.startswith("s-"), proc.stderr
    session_dir = image_state / "sessions" / sid
    assert mounts_below(session_dir)  # the overlay and its tmpfs outlived the process
    r = subprocess.run([sys.executable, "-m", "bastion", "cleanup"], capture_output=True, check=False,
                       text=True, timeout=120,
                       env={**os.environ, "BASTION_STATE_DIR": str(image_state)})
    assert r.returncode == 0 and sid in r.stdout, r.stdout + r.stderr
    assert mounts_below(session_dir) == [] and not session_dir.exists()
    image = cache_for(image_state).resolve(f"{busybox_layout}:v1")
    assert (image.rootfs / "bin" / "busybox").is_file()
    assert not (image.rootfs / "opt" / "left").exists()
