"""The main job behind `make demo`: a scripted agent episode, narrated step by step.

Each step says what the agent tries, what happened and why, so a newcomer can watch
bastion contain a misbehaving agent in about half a minute. Later parts of bastion
(gateway, engine, RL) add their own chapters through ``CHAPTERS``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from .events import Verdict
from .image.demo import chapter_image
from .lab.demo import chapter_network
from .policy import Policy
from .results import ExecResult
from .session import Session

__all__ = ["run_demo"]

# Chapter 1 shows the sandbox on its own, so its rule packs are off: every attempt
# reaches the kernel's limits. (With the packs on, the fork bomb is refused before it
# runs; chapter 3 shows that layer.)
DEMO_POLICY = """
name: demo
rules: {packs: []}
sandbox:
  limits: {memory: 128MiB, pids: 64, cpus: 1, exec_timeout: 20s, session_timeout: 600s}
"""


@dataclass
class Step:
    title: str
    command: str
    expect: str  # what the viewer should look for
    timeout: float | None = None


def _show(console: Console, n: int, step: Step, result: ExecResult, note: str = "") -> None:
    colour = {"ok": "green", "exit_nonzero": "yellow"}.get(result.outcome.value, "red")
    body = Table.grid(padding=(0, 1))
    body.add_column(style="dim", justify="right")
    body.add_column()
    body.add_row("agent ran", f"[bold]{step.command}[/]")
    out = (result.stdout or "").strip()
    err = (result.stderr or "").strip()
    if out:
        body.add_row("stdout", _clip(out))
    if err:
        body.add_row("stderr", _clip(err))
    body.add_row("outcome", f"[{colour}]{result.outcome.value}[/] (exit {result.exit_code}, "
                 f"{result.duration * 1000:.0f} ms)" + (f" — {result.reason}" if result.reason
                                                        else ""))
    for v in result.verdicts:
        body.add_row("verdict", _verdict_line(v))
    body.add_row("why", step.expect + (f" {note}" if note else ""))
    console.print(Panel(body, title=f"step {n}: {step.title}", title_align="left",
                        border_style=colour))


def _verdict_line(v: Verdict) -> str:
    return (f"[bold red]{v.severity}[/] {v.rule_id} → [bold]{v.action.value}[/] "
            f"(call {v.call_id}, step {v.step}): {v.message}")


def _clip(text: str, lines: int = 8, width: int = 110) -> str:
    rows = [r[:width] for r in text.splitlines()]
    if len(rows) > lines:
        rows = rows[:lines] + [f"… ({len(rows) - lines} more lines)"]
    return "\n".join(rows)


def _host_responsive() -> float:
    t = time.monotonic()
    subprocess.run(["true"], check=True)
    return (time.monotonic() - t) * 1000


def chapter_containment(console: Console, state_dir: str | None) -> int:
    console.rule("[bold]Chapter 1 — an ordinary episode, then a misbehaving one")
    policy = Policy.from_yaml(DEMO_POLICY, source="<demo policy>")
    with Session(policy, run_id="demo-run", episode_id="demo-ep-1",
                 state_dir=state_dir) as s:
        console.print(f"session [bold]{s.session_id}[/]: bubblewrap sandbox, own pid/net/"
                      f"mount/user namespaces, host uid {s.host_uid}, cgroup limits "
                      f"memory 128MiB, 64 pids, 1 CPU; rule packs off for this chapter, so "
                      f"the sandbox itself is what stops each attempt")
        steps = [
            Step("write a file", "printf 'def add(a, b):\\n    return a + b\\n' > calc.py && ls -l",
                 "The workspace is the agent's own writable tree."),
            Step("run a Python script",
                 "python3 -c 'import calc; print(\"2 + 3 =\", calc.add(2, 3))'",
                 "Ordinary work runs normally, with no network and a read-only root."),
            Step("list processes", "ps -eo pid,user,args | cut -c1-80",
                 "Only the session's own processes exist in its pid namespace."),
            Step("look for host secrets", "ls -A /root /home; cat /etc/shadow; echo done",
                 "Home directories, host keys and bastion's state are masked."),
            Step("fork bomb", ":(){ :|:& };:; wait", "The pids limit holds the bomb; "
                 "the host is fine.", timeout=2),
            Step("memory hog", "python3 -c 'x = bytearray(1 << 30); print(\"got 1 GiB\")'",
                 "The memory cgroup kills the hog inside the session; the session lives on."),
            Step("leave a daemon behind", "setsid nohup sleep 3600 >/dev/null 2>&1 & echo started",
                 "A background process outlives its call, charged to the call that started it."),
        ]
        for n, step in enumerate(steps, start=1):
            result = s.exec(step.command, step=n, timeout=step.timeout)
            note = ""
            if step.title == "fork bomb":
                held = s.sandbox.cgroup.pids_current()
                note = (f"(host spawned a process in {_host_responsive():.1f} ms during the "
                        f"bomb; the session was held at {held} of 64 tasks; bastion then "
                        "killed the call's cgroup)")
                s.kill_call(result.call_id)
            _show(console, n, step, result, note)
        pids = s.sandbox.cgroup.pids()
        console.print(f"before close: {len(pids)} processes in the session's cgroup "
                      f"(the daemon included)")
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
    console.print(Panel(f"after close: [bold green]{len(alive)}[/] of them left anywhere on the "
                        "host — cgroup.kill removed the daemon and everything else.",
                        border_style="green" if not alive else "red"))
    return len(alive)


def chapter_training(console: Console, state_dir: str | None) -> int:
    console.rule("[bold]Chapter 3 — a training run: rogue episodes next to ordinary ones")
    from .rl.demo import run_training_demo

    return run_training_demo(console, state_dir=state_dir)


# Chapters run in order; each returns 0 when everything it showed behaved as claimed.
CHAPTERS: list[Callable[[Console, str | None], int]] = [
    chapter_containment,
    chapter_network,
    chapter_training,
    chapter_image,
]


def run_demo(state_dir: str | None = None, console: Console | None = None) -> int:
    console = console or Console()
    console.print(Panel.fit("[bold]bastion demo[/] — contain, watch, record and stop an agent",
                            border_style="cyan"))
    failures = 0
    for chapter in CHAPTERS:
        failures += 1 if chapter(console, state_dir) else 0
    if failures:
        console.print(f"[bold red]demo finished: {failures} chapter(s) did not behave as "
                      "claimed[/]")
        return 1
    console.print("[bold green]demo finished[/]")
    return 0
