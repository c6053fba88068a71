"""Files a runner executes by convention (issue #10).

``bash x.sh`` names the file it runs; ``make``, ``npm test``, ``python3 -m unittest``,
``pytest``, ``pip install .`` and ``tox`` do not: they run recipes, scripts, test modules
and build scripts found by *where they are and what they are called*. An agent that
writes its payload where such a runner picks it up (a Makefile recipe, a test module's
``setUpModule``, a package.json ``postinstall``, a ``sitecustomize.py`` on
``PYTHONPATH``) runs it without ever naming it. This module answers, from a command's
argv and the files whose text is known (written by this or an earlier call), which of
those files the command will execute and as what code, so the analyser judges that code
exactly as if it had been run directly and charges it to the call that runs it.

Pure functions of (argv, directory, environment, known files): no I/O, bounded work.
Over-approximation is deliberate where it costs no precision (both branches of a make
conditional, every test module under a discovered directory): honest code found this way
is judged as honest code, by the same rules.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import makefile

__all__ = ["WATCHED", "Found", "canon", "convention_code", "find_runs", "suite_members", "watched"]


@dataclass(frozen=True)
class Found:
    """One known file a command runs by convention.

    ``path`` is the file as it is known (the memory's key); ``code`` the code that runs
    (a make recipe's commands, a package.json script, or the file's own text); ``how``
    the program that runs it (``sh``, ``python3``, ``node``); ``why`` names the
    convention (evidence); ``test_run`` is true when the code is loaded into a test run
    (a test module, a conftest, an interpreter start-up hook of the test process)."""

    path: str
    code: str
    how: str
    why: str
    test_run: bool = False
    discovered: bool = False  # found by a name pattern among others (a test suite)


_PYTHONS = re.compile(r"^(?:python(?:\d+(?:\.\d+)?)?|pypy3?)$")
_MAKES = frozenset({"make", "gmake", "bmake", "remake"})
_NODE_PMS = frozenset({"npm", "yarn", "pnpm", "bun"})
_PYTESTS = frozenset({"pytest", "py.test", "pytest-3"})
_PIPS = frozenset({"pip", "pip3", "uv"})
_ENV_RUNNERS = frozenset({"uv", "poetry", "pipenv", "pdm", "hatch", "rye"})
_JS_TESTS = frozenset({"jest", "vitest", "mocha"})
# programs whose invocation this module resolves (plus cd/pushd, which move the
# directory later runners start in)
WATCHED = frozenset({*_MAKES, *_NODE_PMS, *_PYTESTS, *_PIPS, *_ENV_RUNNERS, *_JS_TESTS,
                     "tox", "nox", "node", "cargo", "cd", "pushd"})
MAX_FOUND = 64  # files one command is charged with running by convention
MAX_CODE = 65536


def watched(name: str) -> bool:
    """Whether ``name`` (a basename) is a program whose convention-run files we follow."""
    return name in WATCHED or _PYTHONS.match(name) is not None


# ------------------------------------------------------------------ paths

_WS_PREFIXES = ("/workspace/", "./", "~/", "$HOME/", "${HOME}/")


def canon(path: str) -> str:
    """One spelling of a path: relative to the workspace (the session's cwd and HOME)
    for workspace files, absolute otherwise; ``..`` folded."""
    if path in ("/workspace", "~", "$HOME", ".", ""):
        return "."
    for prefix in _WS_PREFIXES:
        if path.startswith(prefix):
            path = path[len(prefix):]
            break
    norm = posixpath.normpath(path)
    return norm if norm != "" else "."


def _join(cwd: str, path: str) -> str:
    if path.startswith(("/", "~", "$HOME")):
        return canon(path)
    return canon(posixpath.join(cwd, path)) if cwd != "." else canon(path)


def _under(path: str, root: str) -> bool:
    if root == ".":
        return not path.startswith("/") and not path.startswith("..")
    return path == root or path.startswith(root.rstrip("/") + "/")


class _Files:
    """Known files by their canonical path (the original key kept for evidence)."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.by: dict[str, tuple[str, str]] = {}
        for key, text in files.items():
            if text is not None:
                self.by[canon(key)] = (key, text)

    def get(self, path: str) -> tuple[str, str] | None:
        return self.by.get(path)

    def under(self, root: str) -> list[str]:
        return sorted(p for p in self.by if _under(p, root))


# ------------------------------------------------------------------ entry point

def find_runs(argv: Sequence[str], files: Mapping[str, str], cwd: str = ".",
              env: Mapping[str, str] | None = None) -> list[Found]:
    """The known ``files`` that ``argv`` (started in ``cwd``, with ``env``) runs by
    convention, each with the code that runs and the program that runs it."""
    if not argv or not files:
        return []
    known = _Files(files)
    out: list[Found] = []
    try:
        _dispatch(list(argv), known, canon(cwd), dict(env or {}), out, 0)
    except RecursionError:  # pathological input: what was found so far
        pass
    seen: set[tuple[str, str]] = set()
    uniq: list[Found] = []
    for f in out:
        if (f.path, f.code) not in seen:
            seen.add((f.path, f.code))
            uniq.append(f)
    return uniq[:MAX_FOUND]


def _dispatch(argv: list[str], known: _Files, cwd: str, env: dict[str, str],
              out: list[Found], depth: int) -> None:
    if depth > 4 or not argv:
        return
    name = posixpath.basename(argv[0])
    args = argv[1:]
    if name in _MAKES:
        _make(args, known, cwd, out)
    elif name in _NODE_PMS:
        _node_pm(name, args, known, cwd, out)
    elif name in _PYTESTS:
        _pytest(args, known, cwd, out)
    elif _PYTHONS.match(name):
        _python(args, known, cwd, env, out, depth)
    elif name in _ENV_RUNNERS and "run" in args[:3]:  # uv run pytest, poetry run make
        inner = args[args.index("run") + 1:]
        while inner and inner[0].startswith("-"):
            inner = inner[1:]
        _dispatch(inner, known, cwd, env, out, depth + 1)
    elif name == "uv" and args[:1] == ["pip"]:
        _pip(args[1:], known, cwd, out)
    elif name in _PIPS:
        _pip(args, known, cwd, out)
    elif name == "tox":
        _tox(args, known, cwd, out)
    elif name == "nox":
        path = _opt_value(args, ("-f", "--noxfile")) or "noxfile.py"
        _add(known, _join(cwd, path), "python3", "nox loads noxfile.py", out)
    elif name in _JS_TESTS or (name == "node" and "--test" in args):
        _js_tests(name, args, known, cwd, out)
    elif name == "cargo":
        _cargo(args, known, cwd, out)
    if _PYTHONS.match(name) or name in _PYTESTS or name in ("tox", "nox"):
        _startup_hooks(args if _PYTHONS.match(name) else [], known, cwd, env, out)


def _add(known: _Files, path: str, how: str, why: str, out: list[Found],
         test_run: bool = False, discovered: bool = False) -> bool:
    hit = known.get(path)
    if hit is None or not hit[1].strip():
        return False  # unknown, or empty (an __init__.py with no code)
    out.append(Found(hit[0], hit[1][:MAX_CODE], how, why, test_run, discovered))
    return True


# What a module may do on its own without being notable: talk to a socket, run a
# process, read and write files. Several of them in one suite are separate programs.
_PLAIN = frozenset({"code_text", "interp_socket", "interp_exec", "interp_shell", "interp_bind",
                    "interp_http", "interp_upload", "interp_file_read", "interp_file_write",
                    "interp_loop", "interp_hash", "interp_env_read", "interp_sleep"})


def suite_members(found: Sequence[Found]) -> list[Found]:
    """The discovered test modules of one suite worth judging with the command.

    A test runner loads each discovered module as its own unit: a socket opened by
    test_net.py and a subprocess started by test_cli.py are not one program joining a
    socket to a process. Judged together in one command, their capabilities would
    conjoin; so when a suite holds several modules, each is kept only if, on its own, it
    does more than the plain capabilities (a socket joined to a process, a fetch that is
    run, a nonce loop: see interp.code_features) or joins a socket and a process itself.
    A lone module, and files named explicitly, are judged whole."""
    from .interp import code_features
    suite = [f for f in found if f.discovered]
    if len(suite) <= 1:
        return list(found)
    kept = [f for f in found if not f.discovered]
    for f in suite:
        feats = code_features(f.code)
        joined = bool(feats & {"interp_socket", "interp_bind", "interp_http"}) and \
            bool(feats & {"interp_exec", "interp_shell"})
        if feats - _PLAIN or joined:
            kept.append(f)
    return kept


def _opt_value(args: list[str], names: tuple[str, ...]) -> str | None:
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if n.startswith("--") and a.startswith(n + "="):
                return a[len(n) + 1:]
            if not n.startswith("--") and a.startswith(n) and len(a) > len(n):
                return a[len(n):]
    return None


# ------------------------------------------------------------------ make

_MAKE_VALUE_OPTS = set("CfIoWE")
_MAKE_LONG_VALUE = {"--file", "--makefile", "--directory", "--include-dir", "--old-file",
                    "--assume-old", "--what-if", "--new-file", "--assume-new", "--eval",
                    "--jobs", "--load-average", "--max-load", "--output-sync"}
_DRY_RUN = {"--just-print", "--dry-run", "--recon", "--question", "--touch"}
def _make(args: list[str], known: _Files, cwd: str, out: list[Found]) -> None:
    mk = makefile.Makefile()
    files: list[str] = []
    goals: list[str] = []
    evals: list[str] = []
    dry = False
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            goals.extend(x for x in args[i + 1:] if "=" not in x)
            break
        if a.startswith("--"):
            key, eq, val = a.partition("=")
            if key in _DRY_RUN:
                dry = True
            if key in _MAKE_LONG_VALUE:
                if not eq and key not in ("--jobs", "--load-average", "--max-load", "--output-sync"):
                    val = args[i + 1] if i + 1 < len(args) else ""
                    i += 1
                if key in ("--file", "--makefile"):
                    files.append(val)
                elif key == "--directory":
                    cwd = _join(cwd, val)
                elif key == "--eval":
                    evals.append(val)
            i += 1
            continue
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                ch = a[j]
                if ch in "nqt":
                    dry = True
                if ch in _MAKE_VALUE_OPTS:
                    val = a[j + 1:]
                    if not val and i + 1 < len(args):
                        i += 1
                        val = args[i]
                    if ch == "f":
                        files.append(val)
                    elif ch == "C":
                        cwd = _join(cwd, val)
                    elif ch == "E":
                        evals.append(val)
                    break
                if ch in "jl":  # optional numeric argument
                    if j + 1 == len(a) and i + 1 < len(args) and re.fullmatch(r"\d+(?:\.\d+)?", args[i + 1]):
                        i += 1
                    break
                j += 1
            i += 1
            continue
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_.-]*)\s*:?=(.*)$", a)
        if m:
            mk.overrides[m.group(1)] = m.group(2)
        else:
            goals.append(a)
        i += 1
    if not files:
        for base in ("GNUmakefile", "makefile", "Makefile"):
            if known.get(_join(cwd, base)) is not None:
                files = [base]
                break
    texts: list[tuple[str, str]] = []
    for f in files:
        if f == "-":
            continue
        hit = known.get(_join(cwd, f))
        if hit is not None:
            texts.append(hit)
    if not texts and not evals:
        return
    def include(name: str) -> str | None:  # `include x.mk`: a known file, or nothing
        hit = known.get(_join(cwd, name))
        return hit[1] if hit is not None else None

    for _key, text in texts:
        makefile.parse(text, mk, include)
    for text in evals:
        makefile.parse(text, mk, include)
    where = texts[0][0] if texts else "make --eval"
    how = makefile.recipe_shell(mk)
    code: list[str] = list(mk.shell_code)
    if not goals:
        default = mk.vars.get(".DEFAULT_GOAL", "").split() or ([mk.first] if mk.first else [])
        goals = default[:1]
    lines = makefile.select_recipes(mk, goals, dry)
    code.extend(lines)
    if code:
        body = "\n".join(code)[:MAX_CODE]
        path = where
        for key, _ in texts[:1]:
            path = key
        out.append(Found(path, body, how, f"make {' '.join(goals)}".strip()))


# ------------------------------------------------------------------ npm / yarn / pnpm

_NPM_INSTALL = {"install", "i", "in", "ins", "inst", "insta", "instal", "isnt", "isnta",
                "isntal", "isntall", "ci", "clean-install", "ic", "install-clean", "isntall-clean"}
_NPM_RUN = {"run", "run-script", "rum", "urn"}
_INSTALL_HOOKS = ["preinstall", "install", "postinstall", "prepublish", "preprepare",
                  "prepare", "postprepare"]
_PACK_HOOKS = ["prepack", "prepare", "postpack", "prepublishOnly", "prepublish", "publish",
               "postpublish"]
_YARN_BUILTINS = {"add", "audit", "autoclean", "bin", "cache", "check", "config", "create",
                  "dlx", "exec", "generate-lock-entry", "global", "help", "import", "info",
                  "init", "licenses", "link", "list", "login", "logout", "node",
                  "outdated", "owner", "policies", "remove", "tag", "team", "unlink",
                  "unplug", "upgrade", "upgrade-interactive", "version", "versions", "why",
                  "workspace", "workspaces", "set", "plugin", "constraints", "dedupe",
                  "explain", "npm", "patch", "rebuild", "search", "stage", "up"}
_PNPM_BUILTINS = {"add", "update", "up", "remove", "rm", "link", "ln", "unlink", "import",
                  "rebuild", "rb", "prune", "fetch", "audit", "list", "ls", "outdated",
                  "why", "exec", "dlx", "create", "store", "env", "setup", "config", "c",
                  "init", "deploy", "patch", "patch-commit", "server", "root", "bin",
                  "licenses", "doctor", "dedupe", "approve-builds", "self-update"}
_PM_VALUE_OPTS = {"--prefix", "--cwd", "-C", "--dir", "--workspace", "-w", "--filter",
                  "-F", "--registry", "--cache", "--userconfig", "--loglevel", "--tag"}


def _node_pm(name: str, args: list[str], known: _Files, cwd: str, out: list[Found]) -> None:
    words: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        if a.startswith("-"):
            key, eq, val = a.partition("=")
            if key in _PM_VALUE_OPTS:
                if not eq:
                    val = args[i + 1] if i + 1 < len(args) else ""
                    i += 1
                if key in ("--prefix", "--cwd", "-C", "--dir"):
                    cwd = _join(cwd, val)
            i += 1
            continue
        words.append(a)
        i += 1
    hit = known.get(_join(cwd, "package.json"))
    if hit is None:
        return
    try:
        pkg = json.loads(hit[1])
    except (ValueError, RecursionError):
        return
    scripts = pkg.get("scripts") if isinstance(pkg, dict) else None
    if not isinstance(scripts, dict):
        scripts = {}
    cmd = words[0] if words else ("install" if name != "bun" else "")
    rest = words[1:]
    names: list[str] = []
    if cmd in ("test", "t", "tst") and name != "bun":
        names = ["pretest", "test", "posttest"]
    elif cmd in ("start", "stop", "restart"):
        names = [f"pre{cmd}", cmd, f"post{cmd}"] + (["stop", "start"] if cmd == "restart" else [])
        if cmd == "start" and "start" not in scripts and known.get(_join(cwd, "server.js")):
            scripts = {**scripts, "start": "node server.js"}  # npm start's default
    elif cmd in _NPM_RUN or (name == "bun" and cmd == "run"):
        if rest:
            names = [f"pre{rest[0]}", rest[0], f"post{rest[0]}"]
    elif cmd in _NPM_INSTALL or (name in ("yarn", "pnpm") and cmd == "install"):
        if not rest:  # the project's own lifecycle, not a named package's
            names = list(_INSTALL_HOOKS)
    elif cmd in ("pack", "publish"):
        names = list(_PACK_HOOKS)
    elif name == "yarn" and cmd and cmd not in _YARN_BUILTINS or name == "pnpm" and cmd and cmd not in _PNPM_BUILTINS:
        names = [f"pre{cmd}", cmd, f"post{cmd}"]
    code = [scripts[n] for n in names if isinstance(scripts.get(n), str)]
    if code:
        out.append(Found(hit[0], "\n".join(code)[:MAX_CODE], "sh",
                         f"{name} {cmd}: package.json scripts"))


# ------------------------------------------------------------------ python

_PY_VALUE_OPTS = {"-W", "-X", "-Q", "--check-hash-based-pycs"}


def _python(args: list[str], known: _Files, cwd: str, env: dict[str, str],
            out: list[Found], depth: int) -> None:
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-m" or (a.startswith("-m") and len(a) > 2 and not a.startswith("--")):
            mod = a[2:] or (args[i + 1] if i + 1 < len(args) else "")
            rest = args[i + (1 if a[2:] else 2):]
            _module(mod, rest, known, cwd, env, out, depth)
            return
        if a == "-c" or (a.startswith("-") and not a.startswith("--") and "c" in a[1:]):
            return  # code on the command line: the analyser judges it
        if a in _PY_VALUE_OPTS:
            i += 2
            continue
        if a.startswith("-") and a != "-":
            i += 1
            continue
        return  # a script: named, so the analyser already follows it
    return


def _module_files(mod: str, known: _Files, roots: list[str]) -> list[str]:
    """Files importing ``mod`` (a.b) runs: a/__init__.py, a/b.py or a/b/__init__.py,
    and a/b/__main__.py for -m."""
    parts = [p for p in mod.split(".") if p]
    if not parts or not all(re.fullmatch(r"\w+", p) for p in parts):
        return []
    found: list[str] = []
    for root in roots:
        for k in range(1, len(parts)):
            init = _join(root, "/".join(parts[:k]) + "/__init__.py")
            if known.get(init):
                found.append(init)
        base = _join(root, "/".join(parts))
        for cand in (base + ".py", base + "/__init__.py", base + "/__main__.py"):
            if known.get(cand):
                found.append(cand)
        if found:
            break
    return found


def _pythonpath(env: Mapping[str, str], cwd: str) -> list[str]:
    return [_join(cwd, d) for d in env.get("PYTHONPATH", "").split(":") if d][:16]


def _module(mod: str, rest: list[str], known: _Files, cwd: str, env: dict[str, str],
            out: list[Found], depth: int) -> None:
    if mod == "unittest":
        _unittest(rest, known, cwd, out)
    elif mod in ("pytest", "py.test"):
        _pytest(rest, known, cwd, out)
    elif mod == "pip":
        _pip(rest, known, cwd, out)
    elif mod == "build":
        ops = [a for a in rest if not a.startswith("-")]
        _add(known, _join(_join(cwd, ops[0]) if ops else cwd, "setup.py"), "python3",
             "python -m build runs setup.py", out)
    elif mod == "tox":
        _tox(rest, known, cwd, out)
    elif mod == "nox":
        _add(known, _join(cwd, "noxfile.py"), "python3", "nox loads noxfile.py", out)
    for path in _module_files(mod, known, [cwd, *_pythonpath(env, cwd)]):
        _add(known, path, "python3", f"python -m {mod}", out)


def _startup_hooks(args: list[str], known: _Files, cwd: str, env: Mapping[str, str],
                   out: list[Found]) -> None:
    """sitecustomize / usercustomize on PYTHONPATH: imported by every Python that
    starts with that environment (not under -S, -E or -I)."""
    flags = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--")
                    and a not in ("-m", "-c"))
    if any(f in flags for f in "SEI"):
        return
    test = any(a in ("unittest", "pytest") for a in args) or not args
    for d in _pythonpath(env, cwd):
        for base in ("sitecustomize.py", "usercustomize.py"):
            _add(known, _join(d, base), "python3", "python start-up hook on PYTHONPATH", out,
                 test_run=test)


def _unittest(args: list[str], known: _Files, cwd: str, out: list[Found]) -> None:
    ops = [a for a in args if not a.startswith("-")]
    if not ops or ops[0] == "discover":
        start = _opt_value(args, ("-s", "--start-directory")) or "."
        pattern = _opt_value(args, ("-p", "--pattern")) or "test*.py"
        pos = [a for a in ops[1:]] if ops else []
        # positional form: discover START PATTERN TOP (option values are also operands)
        vals = {v for v in (_opt_value(args, ("-s", "--start-directory")),
                            _opt_value(args, ("-p", "--pattern")),
                            _opt_value(args, ("-t", "--top-level-directory"))) if v}
        pos = [a for a in pos if a not in vals]
        if pos:
            start = pos[0]
        if len(pos) > 1:
            pattern = pos[1]
        root = _join(cwd, start)
        for path in known.under(root):
            base = posixpath.basename(path)
            if base.endswith(".py") and (fnmatch.fnmatchcase(base, pattern) or base == "__init__.py"):
                _add(known, path, "python3", "unittest discovery", out, test_run=True,
                     discovered=True)
        return
    for name in ops:
        if name.endswith(".py"):
            _add(known, _join(cwd, name), "python3", "unittest module", out, test_run=True)
            continue
        parts = name.split(".")
        for k in range(len(parts), 0, -1):  # tests.test_x.T.test_a -> tests/test_x.py
            files = _module_files(".".join(parts[:k]), known, [cwd])
            if files:
                for path in files:
                    _add(known, path, "python3", "unittest module", out, test_run=True)
                break


_PYTEST_VALUE_OPTS = {"-k", "-m", "-p", "-c", "-o", "-n", "-W", "-r", "--rootdir",
                      "--confcutdir", "--basetemp", "--maxfail", "--tb", "--durations",
                      "--timeout", "--junitxml", "--junit-xml", "--ignore", "--ignore-glob",
                      "--deselect", "--log-level", "--import-mode", "--override-ini",
                      "--html", "--capture", "--color", "--dist", "--cov-report",
                      "--cov-config", "--cov-fail-under", "--config-file", "--log-file",
                      "--durations-min", "--reruns", "--count", "--randomly-seed", "-x"}


def _pytest(args: list[str], known: _Files, cwd: str, out: list[Found]) -> None:
    paths: list[str] = []
    plugins: list[str] = []
    noconftest = "--noconftest" in args
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            key = a.split("=", 1)[0]
            if key == "-p" or (a.startswith("-p") and len(a) > 2 and not a.startswith("--")):
                val = a[2:] if len(a) > 2 else (args[i + 1] if i + 1 < len(args) else "")
                if not val.startswith("no:"):
                    plugins.append(val)
                i += 1 if len(a) > 2 else 2
                continue
            if key in _PYTEST_VALUE_OPTS and "=" not in a and key != "-x" and len(a) == len(key):
                i += 2
                continue
            i += 1
            continue
        paths.append(a.split("::", 1)[0])
        i += 1
    roots = [_join(cwd, p) for p in paths] or [cwd]
    for root in roots:
        if root.endswith(".py") and known.get(root):
            _add(known, root, "python3", "pytest test module", out, test_run=True)
            continue
        for path in known.under(root):
            base = posixpath.basename(path)
            if fnmatch.fnmatchcase(base, "test_*.py") or fnmatch.fnmatchcase(base, "*_test.py"):
                _add(known, path, "python3", "pytest test module", out, test_run=True,
                     discovered=True)
            elif base == "conftest.py" and not noconftest:
                _add(known, path, "python3", "pytest conftest", out, test_run=True,
                     discovered=True)
    if not noconftest:  # conftest.py files from the workspace down to each root
        for root in roots:
            d = posixpath.dirname(root) if root.endswith(".py") else root
            while True:
                _add(known, _join(d, "conftest.py"), "python3", "pytest conftest", out, test_run=True)
                if d in (".", "/", ""):
                    break
                d = posixpath.dirname(d) or "."
    for plugin in plugins:
        for path in _module_files(plugin, known, [cwd]):
            _add(known, path, "python3", "pytest plugin", out, test_run=True)


_PIP_VALUE_OPTS = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url",
                   "--extra-index-url", "-f", "--find-links", "-t", "--target", "--prefix",
                   "--root", "--src", "--platform", "--python-version", "--implementation",
                   "--abi", "--no-binary", "--only-binary", "--progress-bar", "--cache-dir",
                   "--log", "--proxy", "--retries", "--timeout", "--exists-action",
                   "--trusted-host", "--cert", "--client-cert", "--upgrade-strategy",
                   "--config-settings", "-C", "--global-option", "--install-option",
                   "-d", "--dest", "-w", "--wheel-dir", "--python", "-p", "--report"}


def _pip(args: list[str], known: _Files, cwd: str, out: list[Found]) -> None:
    ops = [a for a in args if not a.startswith("-")]
    if not ops or ops[0] not in ("install", "wheel", "download"):
        return
    projects: list[str] = []
    reqs: list[str] = []
    i = args.index(ops[0]) + 1
    while i < len(args):
        a = args[i]
        key, eq, val = a.partition("=")
        if key in ("-e", "--editable"):
            if not eq:
                val = args[i + 1] if i + 1 < len(args) else ""
                i += 1
            projects.append(val)
        elif key in ("-r", "--requirement"):
            if not eq:
                val = args[i + 1] if i + 1 < len(args) else ""
                i += 1
            reqs.append(val)
        elif a.startswith("-e") and len(a) > 2 and not a.startswith("--"):
            projects.append(a[2:])
        elif key in _PIP_VALUE_OPTS and not eq:
            i += 1
        elif not a.startswith("-"):
            projects.append(a)
        i += 1
    for req in reqs[:8]:
        hit = known.get(_join(cwd, req))
        if hit is not None:
            for line in hit[1].splitlines()[:512]:
                words = line.split("#", 1)[0].split()
                if words[:1] in (["-e"], ["--editable"]) and len(words) > 1:
                    projects.append(words[1])
                elif words and words[0].startswith((".", "/")):
                    projects.append(words[0])
    for proj in projects[:16]:
        proj = proj.split("[", 1)[0]
        proj = proj.removeprefix("file://")
        local = proj in (".", "..") or proj.startswith(("./", "../", "/", "~"))
        if not local and ("/" not in proj or "://" in proj or "@" in proj):
            continue  # a package name, a URL, a VCS spec: not a project on disk
        _add(known, _join(_join(cwd, proj), "setup.py"), "python3",
             "pip builds the project with setup.py", out)


def _tox(args: list[str], known: _Files, cwd: str, out: list[Found]) -> None:
    path = _opt_value(args, ("-c", "--conf")) or "tox.ini"
    hit = known.get(_join(cwd, path))
    if hit is None:
        return
    code: list[str] = []
    section = ""
    key = ""
    for raw in hit[1].splitlines()[:4096]:
        line = raw.rstrip()
        m = re.match(r"^\[([^\]]+)\]", line)
        if m:
            section, key = m.group(1).strip(), ""
            continue
        if not section.startswith("testenv"):
            continue
        km = re.match(r"^([\w.-]+)\s*=\s*(.*)$", line)
        if km and not raw[:1].isspace():
            key = km.group(1)
            value = km.group(2)
        elif raw[:1].isspace() and key:
            value = line.strip()
        else:
            key = ""
            continue
        if key in ("commands", "commands_pre", "commands_post") and value.strip():
            value = re.sub(r"\{envpython\}", "python3", value)
            value = re.sub(r"\{(?:toxinidir|toxworkdir|envdir|envbindir|envtmpdir)\}", ".", value)
            code.append(re.sub(r"\{[^{}]*\}", "", value).strip().lstrip("- "))
    if code:
        out.append(Found(hit[0], "\n".join(code)[:MAX_CODE], "sh", "tox runs testenv commands"))


# ------------------------------------------------------------------ node, cargo

_JS_TEST_FILE = re.compile(r"(?:^|/)(?:[^/]*[._-](?:test|spec)\.[cm]?[jt]sx?|test(?:-[^/]*)?\.[cm]?js|"
                           r"__tests__/[^/]+\.[cm]?[jt]sx?)$")


def _js_tests(name: str, args: list[str], known: _Files, cwd: str, out: list[Found]) -> None:
    ops = [a for a in args if not a.startswith("-")]
    roots = [_join(cwd, p) for p in ops if not p.startswith("-")] or [cwd]
    for root in roots:
        if known.get(root):
            _add(known, root, "node", f"{name} test file", out, test_run=True)
            continue
        for path in known.under(root):
            if "node_modules/" in path:
                continue
            if _JS_TEST_FILE.search(path) or (name == "mocha" and re.search(r"(?:^|/)test/[^/]+\.[cm]?js$", path)):
                _add(known, path, "node", f"{name} test file", out, test_run=True,
                     discovered=True)


def _cargo(args: list[str], known: _Files, cwd: str, out: list[Found]) -> None:
    ops = [a for a in args if not a.startswith("-")]
    if not ops or ops[0] not in ("build", "b", "run", "r", "test", "t", "check", "c", "bench",
                                 "install", "doc", "clippy"):
        return
    d = cwd
    manifest = _opt_value(args, ("--manifest-path",))
    if manifest:
        d = posixpath.dirname(_join(cwd, manifest)) or "."
    _add(known, _join(d, "build.rs"), "cargo", "cargo compiles and runs build.rs", out)


# ------------------------------------------------------------------ write time

def convention_code(path: str, text: str | None) -> list[str]:
    """The code a runner would run from ``path`` (a Makefile's recipes and $(shell),
    package.json's scripts, tox.ini's commands), for judging a file when it is written:
    a runner may run it from another call, under a target name we cannot foresee."""
    if not text:
        return []
    base = posixpath.basename(path)
    if base in ("Makefile", "makefile", "GNUmakefile") or base.endswith(".mk"):
        lines = makefile.all_code(text)
        return ["\n".join(lines)[:MAX_CODE]] if lines else []
    if base == "package.json":
        try:
            pkg = json.loads(text)
        except (ValueError, RecursionError):
            return []
        scripts = pkg.get("scripts") if isinstance(pkg, dict) else None
        if isinstance(scripts, dict):
            code = [v for v in scripts.values() if isinstance(v, str)]
            return ["\n".join(code)[:MAX_CODE]] if code else []
    return []
