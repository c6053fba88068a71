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

# Directories the real-time watcher follows (besides the workspace root); deeper
# locations (git hooks of nested repositories, .pth files in virtualenvs) are found
# by the end-of-episode diff.
WATCH_DIRS = frozenset({
    ".ssh", ".config", ".config/systemd", ".config/systemd/user", ".config/autostart",
    ".config/environment.d", ".config/fish", ".config/git", ".local", ".local/share",
    ".local/share/systemd", ".local/share/systemd/user", ".cron", "crontabs", "cron.d",
    ".git", ".git/hooks",
})
