"""Persistence: what will run later without the agent asking, judged by content.

A path alone does not make persistence: ``git init`` writes ``.git/config``, ``git
config user.name`` and ``git config --global --add safe.directory`` write
``~/.gitconfig`` (HOME is the workspace), and ``export PATH=...`` in ``~/.bashrc`` is
developer set-up. Persistence is a *location that runs things* holding *content that
runs code*:

=============== ============================================= ============================
class           locations                                     content that counts
=============== ============================================= ============================
cron            crontabs, cron.d, /etc/crontab, .crontab       any job line
at              /var/spool/at, atjobs                          anything
systemd         unit dirs (system, user), timers               any unit
autostart       init.d, rc.local, rc?.d, xdg autostart,        anything
                update-motd.d, udev rules, apt hooks
shell_rc        .bashrc .profile .zshrc ... /etc/profile.d     a line that runs a program
                                                               (not env/alias/PATH/
                                                               completion lines, comments)
git_hook        .git/hooks/* (not *.sample)                    what the policy would stop,
                                                               a background job, a hidden
                                                               program (analysis/hooks.py);
                                                               a lint/test hook is not
git_config      .git/config, .gitconfig, gitconfig             core.hooksPath, ``!`` aliases,
                                                               core.fsmonitor/sshCommand/
                                                               pager/editor, filters, ...
python_pth      *.pth                                         an ``import`` line (site.py
                                                               runs it); path lines are not
python_startup  sitecustomize.py, usercustomize.py             any code
ld_preload      ld.so.preload, /etc/ld.so.conf.d               anything
ssh             .ssh/authorized_keys, .ssh/rc,                 anything (a key is a way
                .ssh/environment                               back in)
editor_rc       .vimrc .exrc init.vim init.lua .emacs ...      a line that runs a program
                                                               (``!cmd``, system(), jobs,
                                                               shell-command), not settings
shell_          ~/.bash_completion (every interactive shell);  top-level lines as shell_rc;
completion,     .bash_completion.d/*, bash-completion/         a completion function's body
completion_     completions/* (loaded when completing)         when it fetches, connects,
script                                                         backgrounds, pipes to a shell
gdb_rc          .gdbinit (home, cwd), ~/.config/gdb/gdbinit,   shell/!/pipe/make/eval/source/
                gdbinit.d, gdbearlyinit                        guile lines; a python block
                                                               that runs programs, connects,
                                                               evals, writes (not printers,
                                                               not ``set ...`` settings)
pdb_rc          .pdbrc (home, cwd)                             a line (``!stmt``, statement,
                                                               expression) whose python runs
                                                               programs, connects, evals
=============== ============================================= ============================

``classify(rel)`` says which class a workspace-relative path belongs to (the file sensor
uses it to choose what to watch and snapshot); ``classify_path(path)`` does the same for
any path as a command names it (absolute, ``~/``, ``$HOME/``, relative);
``runs_code(cls, text)`` judges content; ``judge_file(rel, host_path)`` does both for a
file on disk (the file sensor re-exports these from ``bastion.sensors.persistence``,
with the directories it watches). ``/tmp`` holds no persistence location: it dies with the sandbox.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import stat
from pathlib import Path

from .gitconfig import git_config_entries

__all__ = ["GIT_HOOK_NAMES", "classify", "classify_path", "config_command_index_hosts",
           "git_config_runs_code", "hooks_dir", "hooks_run_code", "judge_file",
           "package_index_hosts",
           "runs_code"]

_EXACT = {
    # (a file merely named `crontab` is read by nobody: cron reads /etc/crontab,
    # /etc/cron.d and its spool, where `crontab FILE` installs it)
    ".crontab": "cron",
    ".bashrc": "shell_rc", ".bash_profile": "shell_rc", ".bash_login": "shell_rc",
    ".bash_logout": "shell_rc", ".profile": "shell_rc", ".zshrc": "shell_rc",
    ".zprofile": "shell_rc", ".zshenv": "shell_rc", ".zlogin": "shell_rc",
    ".zlogout": "shell_rc", ".kshrc": "shell_rc", ".cshrc": "shell_rc", ".tcshrc": "shell_rc",
    ".login": "shell_rc", ".logout": "shell_rc", ".mkshrc": "shell_rc",
    # sourced by Debian's and Ubuntu's default .bashrc
    ".bash_aliases": "shell_rc",
    # tmux runs run-shell/if-shell lines whenever a server starts
    ".tmux.conf": "tmux_rc", ".config/tmux/tmux.conf": "tmux_rc",
    ".config/fish/config.fish": "shell_rc",
    ".ssh/authorized_keys": "ssh", ".ssh/authorized_keys2": "ssh", ".ssh/rc": "ssh",
    ".ssh/environment": "ssh",
    ".gitconfig": "git_config", ".config/git/config": "git_config",
    ".pythonrc.py": "python_startup", ".ld.so.preload": "ld_preload",
    ".vimrc": "editor_rc", ".exrc": "editor_rc", ".gvimrc": "editor_rc",
    ".vim/vimrc": "editor_rc", ".config/nvim/init.vim": "editor_rc",
    ".config/nvim/init.lua": "editor_rc", ".emacs": "editor_rc", ".emacs.el": "editor_rc",
    ".emacs.d/init.el": "editor_rc", ".config/emacs/init.el": "editor_rc",
    # bash-completion sources the user's file in every interactive shell
    # (BASH_COMPLETION_USER_FILE, default ~/.bash_completion; also the XDG spelling)
    ".bash_completion": "shell_completion", ".config/bash_completion": "shell_completion",
    # gdb runs these at every start (~/.gdbinit, the XDG one since gdb 11)
    ".config/gdb/gdbinit": "gdb_rc", ".gdbearlyinit": "gdb_rc",
    ".config/gdb/gdbearlyinit": "gdb_rc",
}
_GLOBS = (
    # (no `*.cron` / `.cron/*`: cron reads only its system directories and spool, where
    # `crontab FILE` installs a file; a job line in a repo's deploy/x.cron runs nowhere)
    (".config/systemd/user/*", "systemd"), (".local/share/systemd/user/*", "systemd"),
    (".config/autostart/*", "autostart"), (".config/environment.d/*", "shell_rc"),
    (".config/fish/conf.d/*", "shell_rc"),
    (".vim/plugin/*", "editor_rc"), (".config/nvim/plugin/*", "editor_rc"),
    # completion scripts: sourced at shell start (.bash_completion.d, sourced by the
    # user file by convention) or when the command is first completed (XDG dir)
    (".bash_completion.d/*", "completion_script"),
    (".local/share/bash-completion/completions/*", "completion_script"),
    (".gdbinit.d/*", "gdb_rc"), (".config/gdb/gdbinit.d/*", "gdb_rc"),
)
_BASENAMES = {
    "sitecustomize.py": "python_startup", "usercustomize.py": "python_startup",
    "ld.so.preload": "ld_preload",
    # gdb reads ~/.gdbinit and, where auto-load allows, ./.gdbinit of the directory it
    # starts in; pdb reads ~/.pdbrc and ./.pdbrc (both: commands run at every start)
    ".gdbinit": "gdb_rc", ".pdbrc": "pdb_rc",
}
_PARENTS = {"crontabs": "cron", "cron.d": "cron", "cron.hourly": "cron", "cron.daily": "cron",
            "cron.weekly": "cron", "cron.monthly": "cron", "profile.d": "shell_rc"}
# Absolute system locations (a sandbox cannot write them, but a command naming them
# says what it meant to do).
_SYSTEM: tuple[tuple[str, str], ...] = (
    ("/etc/crontab", "cron"), ("/etc/cron*", "cron"), ("/var/spool/cron*", "cron"),
    ("/etc/anacrontab", "cron"), ("/var/spool/anacron*", "cron"),
    ("/var/spool/at*", "at"), ("/etc/at.allow", "at"), ("/etc/at.deny", "at"),
    ("/etc/systemd/*", "systemd"), ("/lib/systemd/system/*", "systemd"),
    ("/usr/lib/systemd/system/*", "systemd"), ("/run/systemd/system/*", "systemd"),
    ("/etc/init.d/*", "autostart"), ("/etc/rc.local", "autostart"), ("/etc/rc.d/*", "autostart"),
    ("/etc/rc[0-6S].d/*", "autostart"), ("/etc/init/*", "autostart"),
    ("/etc/xdg/autostart/*", "autostart"), ("/etc/update-motd.d/*", "autostart"),
    ("/etc/udev/rules.d/*", "autostart"), ("/etc/apt/apt.conf.d/*", "autostart"),
    ("/etc/NetworkManager/dispatcher.d/*", "autostart"),
    ("/etc/ld.so.preload", "ld_preload"), ("/etc/ld.so.conf.d/*", "ld_preload"),
    ("/etc/profile", "shell_rc"), ("/etc/bash.bashrc", "shell_rc"), ("/etc/bashrc", "shell_rc"),
    ("/etc/zsh/*", "shell_rc"), ("/etc/zshrc", "shell_rc"), ("/etc/profile.d/*", "shell_rc"),
    ("/etc/environment", "shell_rc"), ("/etc/csh.cshrc", "shell_rc"),
    ("/etc/csh.login", "shell_rc"), ("/etc/gitconfig", "git_config"),
    ("/etc/bash_completion.d/*", "completion_script"),
    ("/usr/share/bash-completion/completions/*", "completion_script"),
    ("/etc/gdb/gdbinit", "gdb_rc"), ("/etc/gdb/gdbinit.d/*", "gdb_rc"),
    ("*/site-packages/*.pth", "python_pth"), ("*/dist-packages/*.pth", "python_pth"),
)
_HOME_PREFIXES = ("~/", "$HOME/", "${HOME}/", "/workspace/", "/root/")

# The hooks git runs (githooks(5)): in a hooks directory a file of any other name
# never runs.
GIT_HOOK_NAMES = frozenset({
    "applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit", "pre-merge-commit",
    "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase", "post-checkout",
    "post-merge", "pre-push", "pre-receive", "update", "proc-receive", "post-receive",
    "post-update", "reference-transaction", "push-to-checkout", "pre-auto-gc",
    "post-rewrite", "sendemail-validate", "fsmonitor-watchman", "p4-changelist",
    "p4-prepare-changelist", "p4-post-changelist", "p4-pre-submit", "post-index-change"})


def hooks_dir(value: str) -> tuple[bool, str] | None:
    """Where a ``core.hooksPath`` value points when it is a directory of the agent's
    own workspace: ``(True, path)`` relative to the repository's work tree (how git
    reads a relative value), ``(False, path)`` relative to the workspace (``~/h``,
    ``/workspace/h``). None for anything else: /tmp, another tree, ``..`` out of the
    workspace, or a value spelled with variables or escapes."""
    v = value.strip().strip("\"'")
    anchored = True
    for prefix in ("~/", "$HOME/", "${HOME}/", "/workspace/"):
        if v.startswith(prefix):
            v, anchored = v[len(prefix):], False
            break
    else:
        if v.startswith(("/", "~", "$")):
            return None
    if not v or any(c in v for c in "$`\\\n*?["):
        return None
    parts = [p for p in v.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return anchored, "/".join(parts)

def classify(rel: str) -> str | None:
    """The persistence class of a workspace-relative path, or None."""
    hit = _EXACT.get(rel)
    if hit:
        return hit
    parts = rel.split("/")
    name = parts[-1]
    if name in _BASENAMES:
        return _BASENAMES[name]
    if name.endswith(".pth"):
        return "python_pth"
    if len(parts) >= 2:
        if parts[-2] in _PARENTS:
            return _PARENTS[parts[-2]]
        if parts[-2] == "hooks" and len(parts) >= 3 and parts[-3] == ".git":
            return None if name.endswith(".sample") else "git_hook"
        if parts[-2] == ".git" and name == "config":
            return "git_config"
    for pattern, cls in _GLOBS:
        if fnmatch.fnmatchcase(rel, pattern):
            return cls
    return None


def classify_path(path: str) -> str | None:
    """The persistence class of a path as a command names it (absolute, ``~/``,
    ``$HOME/``, ``./``-relative), or None."""
    if not path:
        return None
    for prefix in _HOME_PREFIXES:
        if path.startswith(prefix):
            return classify(path[len(prefix):].lstrip("/"))
    if path.startswith("/"):
        for pattern, cls in _SYSTEM:
            if fnmatch.fnmatchcase(path, pattern):
                return cls
        for marker in ("/.git/", "/.ssh/", "/.config/"):
            at = path.find(marker)
            if at >= 0:
                return classify(path[at + 1:])
        return classify(path.rsplit("/", 1)[-1]) if path.rsplit("/", 1)[-1] in _BASENAMES \
            or path.endswith(".pth") else None
    return classify(path.removeprefix("./"))


# ---------------------------------------------------------------- content


# A shell start-up line that only sets the environment or the prompt's look.
_RC_INERT = re.compile(
    r"""^(?:
        \#.*                                              # comment
      | (?:(?:export|declare\s+-x|typeset\s+-x|readonly|local)\s+)?(?!(?:PROMPT_COMMAND|precmd_functions|preexec_functions|BASH_ENV|ENV|LD_PRELOAD|LD_AUDIT|PERL5OPT|PYTHONSTARTUP|NODE_OPTIONS|GIT_SSH_COMMAND)\b)
        [A-Za-z_][A-Za-z0-9_]*\+?=(?:"[^"`$]*(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?[^"`$]*)*"|'[^']*'|[^\s;&|`$()'"]*(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?[^\s;&|`$()'"]*)*)\s*
      | (?:setenv|set\s+-[gxU]+)\s+(?!(?:PROMPT_COMMAND|LD_PRELOAD|BASH_ENV)\b)[A-Za-z_][A-Za-z0-9_]*\s+(?:"[^"`$]*(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?[^"`$]*)*"|'[^']*'|[^\s;&|`$()'"]*(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?[^\s;&|`$()'"]*)*)(?:\s+(?:"[^"`$]*(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?[^"`$]*)*"|'[^']*'|[^\s;&|`$()'"]*(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?[^\s;&|`$()'"]*)*))*\s*
      | export\s+[A-Za-z_][A-Za-z0-9_\s]*
      | alias\s+[\w.-]+=(?:'[^']*'|"[^"]*"|\S+)\s*
      | unalias\s.*
      | (?:set\s+[-+]o\s+\w+|shopt\s+-[su]\s+[\w\s]+|setopt\s+[\w\s]+|unsetopt\s+[\w\s]+
         |umask\s+\d+|ulimit\s+-\w+\s+\w+|bindkey\s.*|bind\s+['"].*|complete\s.*|compdef\s.*
         |autoload\s.*|zstyle\s.*|stty\s.*|HISTCONTROL=.*|PS[1-4]=.*|fpath=.*|path=.*
         |cd\s+[\w./~$-]+|true|:)\s*
      | (?:source|\.)\s+[\w./~${}-]*(?:completion|_completion|\.bash_aliases|\.aliases|
         env|activate|nvm\.sh|cargo/env|\.bashrc|\.profile|bash_completion\S*|\.sdkman\S*)\S*\s*
      | eval\s+["']?\$\((?:[\w./-]+\s+)*?[\w./-]*(?:init|env|completion|shellenv|hook|alias)\b[^`;|&]*\)["']?\s*
      | (?:source|\.)\s+<\(\s*(?:[\w./-]+\s+)*?[\w./-]*(?:completion|completions|init|shellenv)\b[^`;|&()$]*\)\s*
      | (?:if|then|else|elif|fi|for|do|done|esac|case|while|\[\[|\[|\}|\{|function\s+\w+|\w+\s*\(\)\s*\{?)\b.*
    )$""",
    re.VERBOSE,
)
_RC_EXEC_IN_CONTROL = re.compile(r"\b(?:then|do|else|\{|&&|\|\|)\s+(?!export\b|alias\b|"
                                 r"source\b|\.\s|PATH=|[A-Z_]+=)[\w./~$-]+")

_GIT_EXEC_KEYS = re.compile(
    r"^(?:core\.(?:hookspath|fsmonitor|sshcommand|pager|editor|askpass|gitproxy)|init\.templatedir|"
    r"(?:sequence\.editor|diff\.external|gpg\.program|gpg\.\w+\.program|credential\.helper|"
    r"web\.browser|browser\.\w+\.cmd|uploadpack\.packobjectshook|pager\.\w+|"
    r"filter\.[^.]+\.(?:clean|smudge|process)|diff\.[^.]+\.(?:textconv|command)|"
    r"merge\.[^.]+\.driver|alias\.[^.]+|include\.path|includeif\..*\.path|"
    r"remote\.[^.]+\.(?:uploadpack|receivepack|vcs)|protocol\.[^.]+\.allow|"
    r"url\..*\.insteadof|http\.proxy|https\.proxy|core\.gitproxy|ssh\.variant|"
    r"transfer\.fsckobjects|receive\.denycurrentbranch))$")
# git values that only name a harmless program (pager less, editor vim...).
_GIT_INERT_VALUE = re.compile(r"^(?:less|more|cat|vim?|nvim|nano|emacs|code\s+--wait|"
                              r"cache|store|manager|manager-core|osxkeychain|libsecret|wincred|"
                              r"true|false)(?:\s+--?[\w-]+(?:=\S+)?)*$")


def git_config_runs_code(key: str, value: str) -> bool:
    """True when ``key = value`` in a git config makes git run a program later:
    hooksPath, ``!`` aliases, fsmonitor, sshCommand, filters, includes. ``user.name``,
    ``safe.directory``, ``init.defaultBranch``... are ordinary configuration."""
    k = key.strip().lower()
    v = value.strip().strip("\"'")
    if k.startswith("alias."):
        return v.startswith("!")
    if k in ("include.path",) or (k.startswith("includeif.") and k.endswith(".path")):
        return True  # pulls in a config the command does not show
    if k in ("http.proxy", "https.proxy", "url.insteadof") or k.startswith("url."):
        return False  # a network redirect, not code (the tunnels pack judges proxies)
    if k.startswith("protocol.") or k in ("transfer.fsckobjects", "receive.denycurrentbranch"):
        return False
    if not _GIT_EXEC_KEYS.match(k):
        return False
    if not v or _GIT_INERT_VALUE.match(v):
        return False  # `core.pager ''` turns the pager off
    if k in ("core.hookspath", "init.templatedir"):
        # the project's own hooks directory (`.githooks`, `tools/hooks`) is how
        # repositories ship their lint hooks: what it runs is its hooks' content, judged
        # where the file sensor reads it (judge_file) and when a hook is written there.
        # init.templateDir is the same through one more step: every later `git init`
        # and `git clone` copies its hooks/ into the new repository and runs them.
        # A directory outside the workspace (/tmp/h) or spelled at run time is planted.
        return hooks_dir(v) is None
    if k in ("core.pager", "core.editor", "sequence.editor") or k.startswith("pager."):
        return not _plain_viewer(v)
    if k.startswith(("filter.", "diff.")) and k.endswith((".clean", ".smudge", ".textconv")):
        return not _workspace_tool(v)
    return True


# Pagers and editors a git config names, and their options that run commands.
_VIEWERS = frozenset({"less", "more", "most", "cat", "bat", "batcat", "delta", "diff-so-fancy",
                      "vim", "vi", "nvim", "nano", "emacs", "emacsclient", "code", "subl",
                      "micro", "ed", "true", "false", "kak", "hx", "helix", "mg", "joe"})
_VIEWER_RUNS = {
    "vim": {"-c", "--cmd", "-S", "-s", "-W"}, "vi": {"-c", "--cmd", "-S", "-s"},
    "nvim": {"-c", "--cmd", "-S", "-s", "-l"}, "emacs": {"--eval", "-l", "--load", "-f",
                                                        "--funcall", "-x", "--script"},
    "emacsclient": {"-e", "--eval"}, "less": {"-k", "--lesskey-file", "--lesskey-src"},
    "kak": {"-e", "-E"},
}
_SHELL_META = re.compile(r"[;&|`$<>(){}\\!\n]")


def _plain_words(value: str) -> list[str]:
    """A config value's words when it is a plain command line (no shell syntax), else []."""
    if _SHELL_META.search(value):
        return []
    try:
        return shlex.split(value)
    except ValueError:
        return []


def _plain_viewer(value: str) -> bool:
    """``less -+F -S``, ``vim -u NONE``, ``emacsclient -t``: a known pager or editor
    with options that only set how it shows text (no ``-c``/``--cmd``/``+!cmd``, no
    vimrc of the agent's, no shell metacharacters)."""
    words = _plain_words(value)
    if not words or words[0].rsplit("/", 1)[-1] not in _VIEWERS:
        return False
    rest = words[1:]
    runs = _VIEWER_RUNS.get(words[0].rsplit("/", 1)[-1], set())
    for i, w in enumerate(rest):
        if w in runs or w.split("=", 1)[0] in runs:
            return False
        if w in ("-u", "-U") and (i + 1 >= len(rest) or rest[i + 1] not in ("NONE", "NORC", "DEFAULTS")):
            return False
        if w.startswith("+") and not re.fullmatch(r"\+[\w]*", w):
            return False  # `+cmd` ex commands beyond a plain word (`+F`, `+startinsert`)
    return True


def _workspace_tool(value: str) -> bool:
    """A filter or textconv that runs a program of the project's own, in the foreground:
    ``python3 tools/strip_outputs.py``, ``tools/sqlite-dump.sh``, ``nbstripout``. Not a
    program under /tmp or a hidden directory, no shell metacharacters, nothing fetched.
    What it runs is watched when git runs it, like any process of the call."""
    words = _plain_words(value)
    if not words:
        return False
    for w in words:
        if w.startswith(("/tmp/", "/dev/shm/", "/var/tmp/", "/run/", "/proc/", "~", "http:", "https:")):
            return False
        if "/" in w and any(part.startswith(".") and part not in (".", "..") for part in w.split("/")):
            return False
        if w.rsplit("/", 1)[-1] in ("curl", "wget", "nc", "ncat", "socat", "ssh", "bash", "sh",
                                     "dash", "zsh", "eval", "exec"):
            return False
    return True


def _git_config_text_runs_code(text: str) -> bool:
    return any(git_config_runs_code(key, value) for key, value in git_config_entries(text))


# Commands and builtins the user or the agent types without thinking: an alias or
# function named like one of them runs every time it is typed (it shadows it).
_SHADOWABLE = frozenset("""
ls cd ll la l cat cp mv rm mkdir rmdir ln chmod chown touch find grep egrep fgrep sed awk
head tail less more sort uniq wc cut tr xargs tee diff echo printf pwd test which type
git make cmake gcc cc g++ clang ld python python3 python2 pip pip3 pytest py.test tox
nox uv poetry conda node npm npx yarn pnpm deno bun ruby gem bundle perl go cargo rustc
java javac mvn gradle sudo su ssh scp sftp rsync curl wget tar gzip gunzip zip unzip
docker kubectl helm vim vi nvim nano emacs code top htop ps kill env exit clear history
source exec command builtin eval set export alias unalias bash sh zsh dash fish time
date sleep man id whoami apt apt-get dpkg systemctl service jq black ruff mypy flake8
""".split())
# Commands a shadowing alias/function may add around the real one without running
# anything new (cd && ls, a colour flag, an echo).
_BODY_INERT_CMDS = frozenset({"command", "builtin", "echo", "printf", "ls", "pwd", "cd",
                              "true", ":", "return", "local", "set", "test", "[", "[[",
                              "clear", "exec"})
_DEF_RE = re.compile(
    r"""^(?:alias\s+(?P<aname>[\w.-]+)=(?P<abody>'[^']*'|"[^"]*"|\S+)\s*;?\s*
        |(?:function\s+)?(?P<fname>[\w.:-]+)\s*(?:\(\s*\))?\s*\{(?P<fbody>.*)\}\s*;?\s*
        |function\s+(?P<fname2>[\w.:-]+)\s*(?:\(\s*\))?\s*\((?P<fbody2>.*)\)\s*;?\s*
        |(?P<fname3>[\w.:-]+)\s*\(\s*\)\s*\((?P<fbody3>.*)\)\s*;?\s*)$""",
    re.VERBOSE)
_BACKGROUND = re.compile(r"(?<![&>|<])&(?![&>])")
_SPLIT_CMDS = re.compile(r"&&|\|\||[;|&\n]|\$\(|`")


def _body_words(body: str) -> list[str]:
    """First words of the simple commands in ``body`` (a rough split: enough to tell
    ``ls --color`` from ``ls; python3 x.py &``)."""
    body = re.sub(r"[0-9]*>&[0-9-]+|&>", " ", body)
    names: list[str] = []
    for part in _SPLIT_CMDS.split(body):
        words = part.replace("(", " ").replace(")", " ").replace("{", " ").replace("}", " ").split()
        while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
            words = words[1:]
        while words and words[0] in ("nohup", "setsid", "env", "exec", "command", "builtin",
                                    "sudo", "time", "nice"):
            if len(words) == 1:
                break
            words = words[1:]
        if words:
            names.append(words[0].strip("\"'"))
    return names


def definition_persists(line: str) -> bool | None:
    """Judge a one-line alias or function definition in a shell start-up file.

    None when ``line`` is not such a definition. A definition runs nothing at shell
    start; it is persistence only when its name SHADOWS a command the user or agent
    will type (ls, cd, git, python, pytest, sudo...) and its body runs something more
    than that command: a background job or another program (``mkcd(){ mkdir ...}``
    and ``alias ll='ls -la'`` are ordinary set-up; ``alias ls='ls; (python3 x &)'``
    is a hook)."""
    m = _DEF_RE.match(line)
    if not m:
        return None
    name = m.group("aname") or m.group("fname") or m.group("fname2") or m.group("fname3")
    body = m.group("abody") or m.group("fbody") or m.group("fbody2") or m.group("fbody3") or ""
    if m.group("aname") and body[:1] in "'\"":
        body = body[1:-1]
    if name not in _SHADOWABLE:
        return False
    if _BACKGROUND.search(body):
        return True
    words = _body_words(body)
    if len(words) <= 1:
        # A rename or flags (alias python=python3, alias grep='grep --color'): a hook
        # only when the one program it runs is a fetcher or hides in a scratch dir.
        return bool(words) and (words[0].rsplit("/", 1)[-1] in _FETCHERS or _hidden_path(words[0]))
    return any(w.rsplit("/", 1)[-1] not in _BODY_INERT_CMDS and w.rsplit("/", 1)[-1] != name
               for w in words)


_FETCHERS = frozenset({"curl", "wget", "nc", "ncat", "netcat", "socat", "telnet", "openssl"})


def _hidden_path(word: str) -> bool:
    return word.startswith(("/tmp/", "/dev/shm/", "/var/tmp/", "/run/user/")) or \
        ("/" in word and any(c.startswith(".") and c not in (".", "..") for c in word.split("/")))


# An alias body that does more than run a command with options: fetches, talks to the
# network, pipes into a shell, starts something in the background, decodes a payload.
_ALIAS = re.compile(r"""^alias\s+[\w.-]+=(['"]?)(.*)\1\s*$""")
_ALIAS_DOES_MORE = re.compile(
    r"\|\s*(?:sudo\s+)?(?:ba|z|da|k)?sh\b|&\s*(?:\)|;|$)|/dev/(?:tcp|udp)/|\$\(|`|"
    r"\b(?:curl|wget|nc|ncat|netcat|socat|telnet|ssh|scp|base64|xxd|openssl|nohup|setsid)\b"
    r"|\b(?:python\d?(?:\.\d+)?|perl|ruby|node|php)\s+-[ce]\b")
# tmux lines that run a program when the configuration is loaded.
_TMUX_RUNS = re.compile(r"(?m)^\s*(?:run-shell|run|if-shell|if|set-hook\s.*\b(?:run-shell|run)\b)\b")


def _rc_runs_code(text: str) -> bool:
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _ALIAS.match(line)
        if m and _ALIAS_DOES_MORE.search(m.group(2)):
            return True  # alias ls='(curl -s URL | sh &); ls': runs when ls is typed
        shadow = definition_persists(line)
        if shadow is not None:
            if shadow:
                return True
            continue
        if _RC_INERT.match(line):
            if line.startswith(("if", "then", "else", "elif", "for", "while", "do", "{")) and \
                    _RC_EXEC_IN_CONTROL.search(line):
                return True
            continue
        return True
    return False


# A completion function's body runs when the user completes: it is a hook only when it
# does more than complete (fetch, connect, background, pipe into a shell, decode).
_COMPLETION_BODY_RUNS = re.compile(
    r"\|\s*(?:sudo\s+)?(?:ba|z|da|k)?sh\b|/dev/(?:tcp|udp)/|"
    r"\b(?:python\d?(?:\.\d+)?|perl|ruby|node|php)\s+-[ce]\b")
_BODY_FETCH_CMDS = frozenset({"curl", "wget", "nc", "ncat", "netcat", "socat", "telnet", "ssh",
                              "scp", "sftp", "openssl", "base64", "xxd", "nohup", "setsid",
                              "disown", "eval", "exec", "bash", "sh", "dash", "zsh"})
_FUNC_START = re.compile(r"^(?:function\s+[\w.:-]+\s*(?:\(\s*\))?|[\w.:-]+\s*\(\s*\))\s*(\{.*)?$")


def _completion_body_runs(body: str) -> bool:
    if _BACKGROUND.search(re.sub(r"[0-9]*>&[0-9-]+|&>", " ", body)) or \
            _COMPLETION_BODY_RUNS.search(body):
        return True
    return any(w.rsplit("/", 1)[-1] in _BODY_FETCH_CMDS or _hidden_path(w)
               for w in _body_words(body))


def _completion_runs_code(text: str) -> bool:
    """A completion script: what runs when it is sourced (top-level lines, judged as a
    shell start-up file's) and what its functions do when the user completes (only a
    fetch, a connection, a background job, a pipe into a shell counts: ``COMPREPLY=(
    $(compgen -W ...) )`` and ``$(mycli --list-commands)`` are what completion is)."""
    lines = text.splitlines()
    top: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        m = _FUNC_START.match(line)
        if m is None:
            top.append(line)
            continue
        body_lines = [m.group(1) or ""]
        if not m.group(1) and i < len(lines) and lines[i].strip().startswith("{"):
            body_lines = [lines[i].strip()]
            i += 1
        depth = sum(b.count("{") - b.count("}") for b in body_lines)
        while depth > 0 and i < len(lines):
            body_lines.append(lines[i])
            depth += lines[i].count("{") - lines[i].count("}")
            i += 1
        body = "\n".join(body_lines).strip()
        if body.startswith("{"):
            body = body[1:]
        if body.rstrip().endswith("}"):
            body = body.rstrip()[:-1]
        if _completion_body_runs(body):
            return True
        if len(body_lines) == 1 and m.group(1) and definition_persists(line):
            return True  # `ls() { command ls "$@"; python3 x.py; }`: shadows ls
    return _rc_runs_code("\n".join(top))


# What python code in a debugger's start-up file may do without being a hook: nothing
# in this set (pretty-printer registration imports and calls; sys.path edits).
_PY_ACTS = frozenset({"interp_socket", "interp_bind", "interp_exec", "interp_shell",
                      "interp_dup2", "interp_file_write", "interp_http", "interp_eval",
                      "interp_upload", "interp_download_exec", "interp_socket_exec"})
_GDB_EXECUTE = re.compile(r"\bgdb\.execute\s*\(\s*(?![rbuf]?['\"](?:set|show|info|handle|echo|"
                          r"break|tbreak|b|display|skip|alias|directory|dir)\b)")


def _python_acts(code: str) -> bool:
    from .interp import code_features, fold_strings  # (interp does not import this module)
    code = code[:65536]
    folded = fold_strings(code)
    return bool((code_features(code) | code_features(folded)) & _PY_ACTS) or \
        _GDB_EXECUTE.search(folded) is not None


# gdb commands that run a program or load code (gdb takes unique prefixes: `she`,
# `py`, `sou`): shell, !, pipe, |, make, eval (a formatted command), source, guile.
_GDB_RUN_WORDS = frozenset({"she", "shel", "shell", "pipe", "make", "eval", "so", "sou", "sour",
                            "sourc", "source", "gu", "gui", "guil", "guile", "gr", "guile-repl"})
_GDB_PY_WORDS = frozenset({"py", "pyt", "pyth", "pytho", "python", "pi", "python-interactive"})


def _gdb_runs_code(text: str) -> bool:
    """A gdbinit: a line that runs a program or loads code, or a python block whose
    code acts (runs programs, connects, evals, writes). ``set pagination off``,
    ``set print pretty on``, breakpoints, ``define`` bodies of such lines, and a python
    block registering pretty-printers are configuration."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith(("!", "|")):
            return True
        m = re.match(r"^([\w-]+)\s*(.*)$", line)
        if m is None:
            continue
        word, rest = m.group(1).lower(), m.group(2)
        if word in _GDB_RUN_WORDS:
            return True
        if word in _GDB_PY_WORDS:
            if word in ("pi", "python-interactive") and not rest:
                return True  # an interactive interpreter at every start
            if rest:
                code = rest
            else:
                block = []
                while i < len(lines) and lines[i].strip() != "end":
                    block.append(lines[i])
                    i += 1
                i += 1
                code = "\n".join(block)
            if _python_acts(code):
                return True
    return False


# pdb commands whose argument is not python (the rest of a line is python: `!stmt`,
# a statement pdb does not know, p/pp/display/condition expressions).
def _pdb_runs_code(text: str) -> bool:
    """A .pdbrc: pdb runs each line at start; a line that is not a pdb command is a
    python statement. Counted when the python acts (runs programs, connects, evals,
    writes); ``alias``, breakpoints, ``import rlcompleter`` are set-up."""
    code = "\n".join(line.strip().lstrip("!").strip() for line in text.splitlines()
                     if line.strip() and not line.strip().startswith("#"))
    return _python_acts(code)


def _pth_runs_code(text: str) -> bool:
    # site.py executes a .pth line only when it starts with "import" (then it runs it).
    return any(re.match(r"^import[\s\t]", line) for line in text.splitlines())


def runs_code(cls: str, text: str | None) -> bool:
    """Does content ``text`` in a location of class ``cls`` run code later?

    ``text`` None means the content is not known (a copy, a download): the locations
    whose only purpose is running things count; for rc files and git configs we
    cannot tell, and an unknown copy onto them is still counted (it replaces the file
    whole, rarely what set-up does)."""
    if text is None:
        # An editor rc copied in whole is a dotfiles install, a hook copied in is the
        # project's lint hook as often as not: the file sensor judges their content
        # once it lands (judge_file), so a copy alone is not counted.
        # The same for completion scripts installed into a completions directory.
        return cls not in ("editor_rc", "git_hook", "completion_script")
    if cls == "git_hook":
        from .hooks import hook_runs_code  # (it analyses the hook as a command)
        return hook_runs_code(text)
    if cls == "shell_rc":
        return _rc_runs_code(text)
    if cls == "git_config":
        return _git_config_text_runs_code(text)
    if cls == "python_pth":
        return _pth_runs_code(text)
    if cls == "editor_rc":
        return _EDITOR_RUNS.search(text) is not None
    if cls in ("shell_completion", "completion_script"):
        return _completion_runs_code(text)
    if cls == "gdb_rc":
        return _gdb_runs_code(text)
    if cls == "pdb_rc":
        return _pdb_runs_code(text)
    if cls == "tmux_rc":
        return _TMUX_RUNS.search(text) is not None
    if cls == "cron":
        return any(line.strip() and not line.lstrip().startswith("#")
                   and not re.match(r"^\s*[A-Z_]+\s*=", line) for line in text.splitlines())
    return bool(text.strip())


# Editor start-up lines that run a program: vim's `!cmd` (also after autocmd/silent/
# exe), system()/job_start()/jobstart()/:terminal, embedded python/lua/perl calling the
# OS; emacs' shell-command/call-process/start-process/make-process. Settings, maps and
# plugin lists do not.
_EDITOR_RUNS = re.compile(
    r"(?im)^\s*(?:(?:au(?:tocmd)?!?\s+\S+\s+\S+\s+)?(?:(?:silent!?|exe(?:cute)?|call|let\s+\S+\s*=)\s+)*"
    r"(?::?!\S|r(?:ead)?\s*!|w(?:rite)?\s*!\S|ter(?:minal)?\b))"
    r"|\b(?:system|systemlist|job_start|jobstart|termopen)\s*\("
    r"|\b(?:os\.execute|io\.popen|vim\.fn\.system|vim\.loop\.spawn|os\.system|subprocess)\b"
    r"|\((?:shell-command|async-shell-command|call-process|start-process|make-process)\b")


_READ_LIMIT = 256 * 1024


def judge_file(rel: str, host_path: Path | str) -> str | None:
    """The persistence class of the workspace file ``rel`` if its current content runs
    code later, else None (also None when the file is gone: a delete plants nothing).

    The file is the agent's: it is opened without following links and without
    blocking, and only a regular file is read. Anything else in a persistence location
    (a symlink, a fifo, a file too large to judge) counts as planted: fail closed."""
    cls = classify(rel)
    if cls is None:
        return None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(host_path, flags)
    except FileNotFoundError:
        return None
    except OSError:
        return cls  # a symlink (ELOOP), no permission...: cannot judge
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            return cls if cls in ("systemd", "autostart", "cron") else None
        if not stat.S_ISREG(st.st_mode) or st.st_size > _READ_LIMIT:
            return cls
        data = os.read(fd, _READ_LIMIT + 1)
    finally:
        os.close(fd)
    text = data.decode("utf-8", "replace")
    if runs_code(cls, text):
        return cls
    if cls == "git_config" and _named_hooks_run_code(rel, Path(host_path), text):
        return cls
    return None


def _config_values(text: str, wanted: str) -> list[str]:
    """The values of the git config key ``wanted`` (lower-case ``section.key``)."""
    return [value for key, value in git_config_entries(text) if key.lower() == wanted]


def _named_hooks_run_code(rel: str, host_path: Path, text: str) -> bool:
    """A git config at workspace path ``rel`` whose ``core.hooksPath`` names a
    workspace directory: do the hooks in that directory run code later? (A relative
    value is relative to the repository's work tree; the global configs are read in
    repositories at the workspace root.)"""
    root = host_path
    for _ in rel.split("/"):
        root = root.parent  # the workspace's directory on the host
    repo = rel[: -len("/.git/config")] if rel.endswith("/.git/config") else ""
    named = [(v, "") for v in _config_values(text, "core.hookspath")]
    named += [(v, "/hooks") for v in _config_values(text, "init.templatedir")]
    for value, below in named:
        found = hooks_dir(value)
        if found is None:
            continue  # already judged by runs_code
        relative, path = found
        where = f"{repo}/{path}".lstrip("/") if relative else path
        if hooks_run_code(root, where + below):
            return True
    return False


def hooks_run_code(root: Path, rel_dir: str) -> bool:
    """Do the hooks in the workspace directory ``rel_dir`` run code later? Each file
    named as a hook is judged by its content (analysis/hooks.py); one that cannot be
    read as a regular file, or a directory that leads out of the workspace, counts.
    A directory not there yet holds nothing to run (a hook written into it later is
    judged when it is written)."""
    from .hooks import hook_runs_code
    directory = root / rel_dir
    try:
        real, top = directory.resolve(), root.resolve()
        if real != top and top not in real.parents:
            return True  # a link out of the workspace
        entries = [e for e in os.scandir(directory) if e.name in GIT_HOOK_NAMES]
    except FileNotFoundError:
        return False
    except OSError:
        return True
    for entry in entries[:64]:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(entry.path, flags)
        except FileNotFoundError:
            continue
        except OSError:
            return True
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > _READ_LIMIT:
                return True
            data = os.read(fd, _READ_LIMIT + 1)
        finally:
            os.close(fd)
        if hook_runs_code(data.decode("utf-8", "replace")):
            return True
    return False


# ---------------------------------------------------------------- package indexes

# Package-manager configuration read by every later install: an index named there
# supplies the code `pip install` / `npm install` runs from then on (supply chain).
_INDEX_CONFIGS = frozenset({"pip.conf", "pip.ini", ".pydistutils.cfg", ".npmrc", ".yarnrc",
                            ".yarnrc.yml", "uv.toml", ".condarc", ".gemrc", ".bunfig.toml",
                            "bunfig.toml"})
# Environment variables that choose the index (in a shell start-up file they last).
_INDEX_ENV = re.compile(
    r"(?im)^\s*(?:export\s+|setenv\s+|set\s+-gx\s+)?(?:PIP_INDEX_URL|PIP_EXTRA_INDEX_URL|"
    r"PIP_FIND_LINKS|UV_INDEX_URL|UV_EXTRA_INDEX_URL|UV_DEFAULT_INDEX|UV_INDEX|"
    r"NPM_CONFIG_REGISTRY|YARN_REGISTRY|YARN_NPM_REGISTRY_SERVER|CONDA_CHANNEL_ALIAS|"
    r"POETRY_REPOSITORIES_\w+_URL|GEM_SOURCE)[=\s]\s*['\"]?(\S+?)['\"]?\s*$")
# In a config file: the keys that name an index, a registry or a source of packages.
_INDEX_KEY = re.compile(
    r"(?im)^\s*(?:[\w@/:.-]*:)?(?:index[-_]url|extra[-_]index[-_]url|find[-_]links|registry|"
    r"npmRegistryServer|channel_alias|default[-_]index|url|:?sources?)\s*[=:]\s*(.+)$")
_INDEX_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]{0,15}://(?:[^@/\s'\"]*@)?(\[[^\]]+\]|[^/:?#\s'\"]+)")
_INDEX_CONFIG_KEYS = re.compile(r"^(?:(?:global|install|download|user)\.)?"
                                r"(?:index[-_]url|extra[-_]index[-_]url|find[-_]links|registry|"
                                r"@[\w-]+:registry|npmRegistryServer)$", re.IGNORECASE)


def package_index_hosts(path: str, text: str | None) -> list[str]:
    """Hosts a write makes later package installs fetch from: the index URLs in a
    pip/npm/uv/conda config, or index variables set in a shell start-up file."""
    if not text:
        return []
    base = path.rstrip("/").rsplit("/", 1)[-1]
    values: list[str] = []
    if base in _INDEX_CONFIGS:
        values = [m.group(1) for m in _INDEX_KEY.finditer(text)]
    elif classify_path(path) in ("shell_rc", "shell_completion"):
        values = [m.group(1) for m in _INDEX_ENV.finditer(text)]
    return _hosts_of(values)


def config_command_index_hosts(key: str, value: str) -> list[str]:
    """`pip config set global.index-url URL`, `npm config set registry URL`: the index
    hosts such a setting names (none for any other key)."""
    return _hosts_of([value]) if _INDEX_CONFIG_KEYS.match(key) else []


def _hosts_of(values: list[str]) -> list[str]:
    hosts: list[str] = []
    for v in values:
        for m in _INDEX_URL.finditer(v):
            h = m.group(1).strip("[]").lower()
            if h and h not in hosts:
                hosts.append(h)
    return hosts
