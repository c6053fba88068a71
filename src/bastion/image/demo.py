"""Demo chapter: an episode inside a task image (`make demo`).

A task image is built on the spot (busybox, no Python; a repository at /testbed),
saved as a `docker save` archive, and two episodes run in it: the first edits the
repository and installs a file into the image, the second shows none of it survived.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ..policy import Policy
from ..session import Session
from . import sample

__all__ = ["chapter_image"]

_POLICY = """
name: demo-image
sandbox:
  workspace: /testbed
  protected: [/testbed/tests]
  limits: {memory: 256MiB, disk: 64MiB, exec_timeout: 20s}
"""


def _build(work: Path) -> Path:
    rootfs = sample.busybox_rootfs(work / "rootfs")
    task = work / "task"
    (task / "testbed" / "tests").mkdir(parents=True)
    (task / "testbed" / "calc.sh").write_text("add() { echo $(($1 - $2)); }\n")
    (task / "testbed" / "tests" / "run.sh").write_text(
        ". ./calc.sh\n[ \"$(add 2 3)\" = 5 ] && echo PASS || echo FAIL\n")
    layout = sample.oci_layout(work / "layout", "task", [rootfs, task], workdir="/testbed")
    return sample.docker_archive(layout, "task", work / "task-image.tar")


def chapter_image(console: Console, state_dir: str | None) -> int:
    """Returns the number of things that did not behave as shown (0 on success)."""
    console.rule("[bold]Chapter — an episode inside the task's own container image")
    work = Path(tempfile.mkdtemp(prefix="bastion-demo-image-", dir="/var/tmp"))
    failures = 0
    try:
        archive = _build(work)
        policy = Policy.from_yaml(_POLICY, source="<demo image policy>")
        t = time.monotonic()
        with Session(policy, run_id="demo-run", episode_id="demo-image-1",
                     state_dir=state_dir, image=str(archive)) as s:
            first = time.monotonic() - t
            assert s.image_view is not None
            console.print(f"image {archive.name} (busybox, [bold]no Python[/]): imported, "
                          f"digest-checked and unpacked once ({first:.2f} s with the session); "
                          "the session sees it through its own copy-on-write layer")
            steps = [
                ("where am I", "pwd; ls; command -v python3 || echo 'no python3 in the image'"),
                ("run the task's tests", "sh tests/run.sh"),
                ("fix the bug in the image's repo",
                 "sed -i 's/\\$1 - \\$2/$1 + $2/' calc.sh && sh tests/run.sh"),
                ("install something into the image", "mkdir -p /opt/tool && echo v1 > /opt/tool/VERSION"),
                ("try to edit the grader", "echo 'echo PASS' > /testbed/tests/run.sh"),
            ]
            table = Table("step", "command", "outcome", "output / verdicts")
            for n, (title, cmd) in enumerate(steps, start=1):
                r = s.exec(cmd, step=n)
                text = (r.stdout or r.stderr).strip().replace("\n", " | ")[:70]
                verdicts = ", ".join(v.rule_id for v in r.verdicts)
                table.add_row(f"{n}. {title}", cmd[:48], f"{r.outcome.value} ({r.exit_code})",
                              text + (f" [red]{verdicts}[/]" if verdicts else ""))
            console.print(table)
            changes = [f"{c.kind:8} {c.path}" for c in s.image_view.changes()
                       if not c.path.endswith("/tool")]
            console.print(Panel("\n".join(changes) or "(none)",
                                title="episode-end diff (the session's upper layer)"))
            failures += "/testbed/calc.sh" not in "\n".join(changes)
            failures += any("tests/run.sh" in c for c in changes)
        t = time.monotonic()
        with Session(policy, run_id="demo-run", episode_id="demo-image-2",
                     state_dir=state_dir, image=str(archive)) as s2:
            created = time.monotonic() - t
            r = s2.exec("sh tests/run.sh; cat /opt/tool/VERSION 2>&1")
            console.print(Panel(f"next episode, same image (created in {created * 1000:.0f} ms "
                                f"from the cache): {r.stdout.strip()!r} — the first episode's "
                                "fix and install are gone, the cached image is untouched",
                                border_style="green"))
            failures += "FAIL" not in r.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return failures
