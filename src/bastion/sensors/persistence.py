"""Persistence locations for the file sensor: which directories to watch, and the
content judgement shared with the command analyser (``bastion.analysis.persistence``):
a write is persistence only when a location that runs things holds content that runs
code (``.git/config`` with ``user.name`` is not; ``core.hooksPath`` is).
"""

from __future__ import annotations

from ..analysis.persistence import classify as classify
from ..analysis.persistence import classify_path as classify_path
from ..analysis.persistence import git_config_runs_code as git_config_runs_code
from ..analysis.persistence import judge_file as judge_file
from ..analysis.persistence import runs_code as runs_code

__all__ = ["WATCH_DIRS", "classify", "classify_path", "git_config_runs_code", "judge_file",
           "runs_code"]

# The user site-packages (site.getusersitepackages(): ~/.local/lib/pythonX.Y/
# site-packages): every python of the user reads its .pth files at start, so a .pth
# written there by a path the command does not show (shutil.copyfile to a computed
# path) is seen when it is written, charged to its writer's call. One entry per python
# version the sandbox may run; each is followed when the agent creates it.
_USER_SITE = tuple(d for minor in range(6, 20)
                   for d in (f".local/lib/python3.{minor}",
                             f".local/lib/python3.{minor}/site-packages"))

# Directories the real-time watcher follows (besides the workspace root); deeper
# locations (git hooks of nested repositories, .pth files in virtualenvs) are found
# by the end-of-episode diff.
WATCH_DIRS = frozenset({
    ".ssh", ".config", ".config/systemd", ".config/systemd/user", ".config/autostart",
    ".config/environment.d", ".config/fish", ".config/git", ".local", ".local/share",
    ".local/share/systemd", ".local/share/systemd/user", ".cron", "crontabs", "cron.d",
    ".git", ".git/hooks",
    # start-up files of shells' completion and of debuggers (gdb)
    ".bash_completion.d", ".local/share/bash-completion",
    ".local/share/bash-completion/completions", ".config/gdb", ".config/gdb/gdbinit.d",
    ".gdbinit.d",
    ".local/lib", *_USER_SITE,
})
