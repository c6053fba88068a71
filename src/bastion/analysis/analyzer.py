"""Static analysis of one shell command: what could it run, with what, fed by what.

The command is parsed with tree-sitter-bash (error tolerant: a broken command still
yields a partial tree, and the breakage is itself reported). We walk the tree once,
resolving each word the way bash would where that is knowable without running
anything — quotes, escapes, ``$'..'``, literal variables, ``$IFS`` — and follow every
place where text becomes code: ``sh -c``, ``eval``, pipes into a shell, heredocs and
here-strings into a shell, base64/hex decoders, ``find -exec``, command wrappers
(``sudo``, ``env``, ``nohup``, ``xargs``...), and interpreter one-liners. Text that
becomes code is analysed again, to a bounded depth and total size, so that rules
match what would actually run.
"""

from __future__ import annotations

import fnmatch
import functools
import posixpath
import re
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import tree_sitter
import tree_sitter_bash

from ..rules.vocabulary import vocabulary
from .persistence import (GIT_HOOK_NAMES, classify_path, config_command_index_hosts,
                          git_config_runs_code, package_index_hosts, runs_code)
from .acts import Acts, argv_acts, hosts_in, norm_path, option_tokens, subcommands
from . import clientconf, runners
from .knownlines import selected_lines
from .decode import decodings, looks_like_base64, try_base64, try_hex
from .interp import fold_path_constants
from .hosts import hosted_programs, loader_program
from .grading import (HOOK_FILES, alters_test_outcomes, code_tampers_test_framework,
                      overrides_test_run, patches_test_runner, python_write_paths, startup_code)
from .escapes import ansi_c, echo_e, printf_format, unescape_bare, unescape_double
from .interp import code_features as _code_features
from .stratum import STRATUM_METHOD
from .interp import embedded_commands, fold_strings, interpreter_code, interpreter_lang, web_shell

__all__ = ["MAX_ARGV", "MAX_DEPTH", "Analyzer", "CallMemory", "analyze_argv", "analyze_command"]

MAX_DEPTH = 4
MAX_TEXT = 64 * 1024  # total characters analysed per command, all levels together
MAX_NODES = 20000
# CPU-time budget for one command, all levels: tree-sitter's error recovery is
# super-linear on some pathological inputs, and analysis must never stall a session.
# It is the analysing thread's CPU time, not wall time: on a host loaded by a rollout
# burst a thread waits for a core far longer than this, and an honest command must not
# become "unanalysable" (a denial) because of the host's load.
# Long text is parsed in pieces of at most PARSE_CHUNK characters, cut at line ends,
# which bounds the worst case of one parse; the deadline stops further pieces.
TIME_BUDGET = 0.25
TIME_PER_CHAR = 4e-6
MAX_EXTRA_TIME = 2.0
PARSE_CHUNK = 8192
# An argv list (exec without a shell) is not parsed as shell: its size is bounded by what
# the kernel execs (ARG_MAX, 2 MiB by default; one argument at most 128 KiB). Past this
# total the call cannot run as given, and the analysis fails closed (``oversize``).
MAX_ARGV = 4 * 1024 * 1024
# Interpreter code is analysed whole up to the kernel's limit for one argument
# (MAX_ARG_STRLEN): a padded script must not push its socket call out of view.
MAX_CODE = 128 * 1024

_LANGUAGE = tree_sitter.Language(tree_sitter_bash.language())
# A tree-sitter Parser is not thread-safe (two threads parsing at once crash in the
# scanner): sessions analyse commands from many threads, so each thread has its own.
_PARSERS = threading.local()


def _parser() -> tree_sitter.Parser:
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = tree_sitter.Parser(_LANGUAGE)
    return parser

_VOCAB = vocabulary()


@functools.lru_cache(maxsize=64)
def code_features(code: str) -> frozenset[str]:
    """interp.code_features, once per text: one command's code is judged by several
    passes (features, credential reads, senders, written programs)."""
    return frozenset(_code_features(code))
# One definition of each class of program, shared with every rule pack
# (rules/vocabulary.yaml).
SHELLS = _VOCAB["shell_binaries"] - {"pwsh"}
DOWNLOADERS = _VOCAB["downloader_binaries"]
DNS_QUERY_TOOLS = _VOCAB["dns_query_tools"]
TEXT_TOOLS = _VOCAB["text_tools"]
FILE_READERS = _VOCAB["file_readers"]
_B64_DECODERS = frozenset({"base64", "base32", "b64", "openssl", "basenc"})
# Wrappers run their operand as a command; value = options that take an argument.
_WRAPPERS: dict[str, frozenset[str]] = {
    "sudo": frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "-R",
                       "--user", "--group", "--chdir", "--host", "--prompt"}),
    "doas": frozenset({"-u", "-C"}),
    "pkexec": frozenset({"--user"}),
    "env": frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}),
    "nohup": frozenset(), "nice": frozenset({"-n", "--adjustment"}),
    "ionice": frozenset({"-c", "-n", "-p", "-t"}), "setsid": frozenset(),
    "time": frozenset({"-f", "-o"}), "stdbuf": frozenset({"-i", "-o", "-e"}),
    "command": frozenset(), "builtin": frozenset(), "exec": frozenset({"-a"}),
    "timeout": frozenset({"-s", "-k", "--signal", "--kill-after"}),
    "xargs": frozenset({"-I", "-i", "-n", "-P", "-d", "-a", "-E", "-e", "-L", "-l", "-s",
                        "--max-args", "--max-procs", "--delimiter", "--arg-file",
                        "--replace", "--max-lines", "--max-chars"}),
    "watch": frozenset({"-n", "-d", "--interval"}),
    "chroot": frozenset(), "unshare": frozenset(), "nsenter": frozenset({"-t", "--target"}),
    "strace": frozenset({"-e", "-o", "-p", "-s", "-u"}), "ltrace": frozenset({"-e", "-o", "-p"}),
    "torsocks": frozenset(), "proxychains": frozenset({"-f"}),
    "proxychains4": frozenset({"-f"}), "torify": frozenset(), "tsocks": frozenset(),
    "flock": frozenset({"-w", "-E"}), "taskset": frozenset(), "chrt": frozenset(),
    "cpulimit": frozenset({"-l", "-p", "-e"}), "caffeinate": frozenset(),
    "firejail": frozenset(), "faketime": frozenset(), "fakeroot": frozenset(),
    "script": frozenset(), "catchsegv": frozenset(), "aa-exec": frozenset({"-p", "-n"}),
    "runuser": frozenset({"-u", "-g", "-l"}), "sg": frozenset(), "systemd-run": frozenset(
        {"--unit", "-u", "--on-calendar", "--on-active", "-p", "--property", "--uid"}),
    "busybox": frozenset(), "unbuffer": frozenset(), "rlwrap": frozenset(),
    "gdb": frozenset({"-ex", "--ex", "-iex", "-x", "-ix", "-eval-command", "-command", "-p", "--pid",
                      "-c", "--core", "-d", "--directory", "-cd", "-s", "-e", "-se"}), "valgrind": frozenset(), "perf": frozenset(), "dbus-launch": frozenset(),
}
# Wrappers whose first operand is not the command (chroot DIR cmd, taskset MASK cmd...).
# Programs whose job is to run another program (possibly with other limits or another
# user's id) without changing what it can do: `sudo env /bin/sh` is the same as `sudo sh`.
RUNNERS = _VOCAB["runner_binaries"]
COMMAND_OPTIONS = _VOCAB["command_enabling_options"]
NET_CLIENTS = (_VOCAB["raw_socket_clients"] - {"socket", "rcat"}) | {"ssh", "curl", "wget"}
MAILERS = _VOCAB["mailer_binaries"]
_REMOTE_STORE = re.compile(r"cat\s*>|\btee\b|\bdd\s|\btar\s+-?\w*x|\bmysql\b|\bpsql\b|"
                           r"pg_restore|gunzip|gzip\s+-d|\bunzip\b|>\s*\S|\bcp\s+/dev/stdin|"
                           r"\b(?:podman|docker|nerdctl)\s+load|\bxargs\b|\bcat\s*$|\bzstd\s+-d")
# Invocations that only print help/version/completions or manage configuration.
INERT_ARGS = frozenset({"-h", "--help", "-help", "help", "-?", "version", "--version",
                        "-version", "-V", "completion", "completions", "--completion",
                        "--generate-completion", "verify", "doctor", "--genkey", "genkey",
                        "login", "logout", "list", "ls", "status", "bugreport", "netcheck"})
_SHELL_REF = re.compile(
    r"(?:\.\./)+bin/(?:ba|da|z)?sh\b|-[A-Za-z]/bin/(?:ba|da|z)?sh\b|"
    r"(?:^|[\s'\"!:=,;({\[`])(?:/usr)?/bin/(?:ba|da|z|k|c|tc|a|mk)?sh\b|(?:^|[\s'\"])!\s*/?\S*sh\b"
    r"|:!\s*\S|:shell\b|\\!\s*\S|\bshell-escape|write18|\bsystem\s*\(|\bsystem\s+['\"]|"
    r"(?<!-)\bexec\s+(?:/bin/|/usr/bin/|(?:ba|z|da)?sh\b)|\bexec\s*\(|os\.execute|pty\.spawn|\bspawn\b|callCommand|\bshell\s+/|"
    r"\$\(shell\s|\.shell\b|\.system\b|"
    r"--(?:rsh|to)-command|--checkpoint-action|--use-compress-program|"
    r"execute\s*=|\bexecl?p?\s*\(|pcntl_exec|\brun\(`", re.IGNORECASE)
_PRIV_SHELL = re.compile(
    r"(?:^|[^\w.-])(?:ba|da|z|k|a|mk)?sh\\?(?:[\"'\],]+\s*\[?\s*[\"']?(?:sh[\"']\s*,\s*[\"'])?|"
    r"\s+(?:--\s+)?(?:-[a-z]+\s+)*)-[a-oq-z]*p[a-z]*\b|--arg=[\"']?-p\b|argv1=-p")
_SCP_ARG = frozenset({"-c", "-F", "-i", "-J", "-l", "-o", "-P", "-S", "-D", "-X", "-e",
                      "--rsh", "-f", "--filter", "--include", "--exclude", "-B", "--port",
                      "--password-file", "--log-file", "-T", "--temp-dir"})
_REMOTE = re.compile(r"^(?:[\w.${}-]+@)?([\w.${}\[\]:-]+?):{1,2}(?!//)")
# Text that is source code rather than a shell command (submitted as a "command").
_SOURCE_CODE = re.compile(r"\s*(?:module\s|import\s|package\s|using\s|#include|<\?(?:php|=)|<%|"
                          r"public\s+class|\(function|require\(|fn\s+main|def\s|class\s)")
# Monero (95 base58 chars from 4/8) and Bitcoin bech32 wallet shapes, as pool logins.
_WALLET = re.compile(r"(?:^|[\s=:\"'/.])(?:[48][0-9AB][1-9A-HJ-NP-Za-km-z]{93}|bc1[02-9ac-hj-np-z]{39,59})(?:$|[\s\"'.+])")
_DECODERS = _VOCAB["decoder_binaries"]
_COMPILERS = frozenset({"gcc", "cc", "g++", "c++", "clang", "clang++", "tcc", "javac", "java",
                        "rustc", "go", "kotlinc", "scalac", "dotnet", "csc", "mcs", "gfortran",
                        "nim", "crystal", "dart", "swift", "swiftc", "ghc", "runghc", "zig"})
_SKIP_OPERANDS = {"chroot": 1, "taskset": 1, "chrt": 1, "timeout": 1, "flock": 1, "sg": 1}
_CAPTURE_SPLIT = re.compile(r"\s+")
# Bounded repetitions: these run over attacker-controlled text of any length.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]{0,15}://[^\s'\"<>|;&)]{1,2048}", re.IGNORECASE)
_HOSTPORT = re.compile(r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63}){1,8}):\d{2,5}\b", re.IGNORECASE)
_SSH_CONFIG_FWD = re.compile(r"(?im)^\s*(?:remoteforward|localforward|dynamicforward|"
                             r"proxycommand|proxyjump|tunnel\s*=?\s*(?:yes|point-to-point|"
                             r"ethernet))\b")
# ssh_config lines that run a command on the client at every connection.
_SSH_CONFIG_EXEC = re.compile(r"(?im)^\s*(?:LocalCommand|KnownHostsCommand)\b\s*=?\s*\S|^\s*Match\b.*\bexec\b")
# npm/yarn settings that make every script's node load a module or run another shell.
_NPM_RUNS = re.compile(r"(?im)^\s*(?:node[-_]options|nodeOptions)\s*[=:].*(?:--require|-r\s|--import|"
                       r"--loader|--experimental-loader)|^\s*script[-_]shell\s*[=:]")
_WRITE_OP = re.compile(r"\d*>>?\|?|&>>?|>>?&|\d*<>")
_BRACE = re.compile(r"^\{?([^{},\s]+(?:,[^{},]*)+)\}$")


def _basename(word: str) -> str:
    return posixpath.basename(word.rstrip("/")) or word


class CallMemory:
    """What one session's earlier commands did that a later command completes. One per
    session, shared by its calls:

    - files a downloader wrote (fetched in call 1, made executable and run in call 2 is
      one download-and-execute, split over calls);
    - links (``ln -s``, ``os.symlink``): a link made in call 1 and read or written
      through in call 2 reads or writes its target, whatever the link is called;
    - scripts written with known text (a heredoc, a write_file tool call): run in a
      later call, their code is judged as the code that runs then (``$0`` is the path);
    - renamed copies of programs (``cp "$(command -v bash)" .cache/x``): run in a later
      call, ``x`` is judged as the program it copies (``curl … | .cache/x`` is a
      download run by a shell).
    """

    LIMIT = 1024
    SCRIPT_LIMIT = 256  # scripts remembered (the most recent)
    SCRIPT_BYTES = 64 * 1024  # longer scripts are not remembered (judged when written)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._downloaded: dict[str, None] = {}
        self._links: dict[str, str] = {}
        self._scripts: dict[str, str] = {}
        self._secrets: dict[str, str] = {}  # file made from a credential -> the credential
        self._aliases: dict[str, str] = {}  # a copy's name -> the program it copies
        self._staged_secret = False  # a secret's copy was `git add`ed (pushed later?)
        # the session's reader of sandbox files (sandboxfs.SandboxFiles): a client's
        # config on disk now, whoever wrote it (clientconf.file_text)
        self.files: Callable[[str], str | None] | None = None

    def downloaded(self) -> list[str]:
        with self._lock:
            return list(self._downloaded)

    def links(self) -> dict[str, str]:
        """Link path -> what it points at (both normalised as acts are)."""
        with self._lock:
            return dict(self._links)

    def scripts(self) -> dict[str, str]:
        """Path -> the text last written there by an earlier call."""
        with self._lock:
            return dict(self._scripts)

    def secrets(self) -> dict[str, str]:
        """Files earlier calls made from a credential store (copies, pieces, encodings)
        -> the credential they came from."""
        with self._lock:
            return dict(self._secrets)

    def aliases(self) -> dict[str, str]:
        """Names of renamed copies earlier calls made -> the program each copies."""
        with self._lock:
            return dict(self._aliases)

    def update_aliases(self, made: dict[str, str], rewritten: list[str]) -> None:
        """Copies made by this command; names of files it wrote otherwise or deleted
        (no longer the copy)."""
        with self._lock:
            for name in rewritten:
                if name not in made:
                    self._aliases.pop(name, None)
            for name, real in made.items():
                self._aliases.pop(name, None)
                self._aliases[name] = real
            while len(self._aliases) > self.LIMIT:
                self._aliases.pop(next(iter(self._aliases)))

    def staged_secret(self) -> bool:
        with self._lock:
            return self._staged_secret

    def update_secrets(self, made: dict[str, str], rewritten: list[str], staged: bool) -> None:
        with self._lock:
            for path in rewritten:
                if path not in made:
                    self._secrets.pop(path, None)
            for path, origin in made.items():
                self._secrets.pop(path, None)
                self._secrets[path] = origin
            while len(self._secrets) > self.LIMIT:
                self._secrets.pop(next(iter(self._secrets)))
            self._staged_secret = self._staged_secret or staged

    def update(self, fetched: list[str], rewritten: list[str]) -> None:
        """Files fetched by this command are remembered; files it wrote otherwise or
        deleted (a rebuilt binary, rm) are no longer the download."""
        with self._lock:
            for path in rewritten:
                self._downloaded.pop(path, None)
            for path in fetched:
                self._downloaded.pop(path, None)
                self._downloaded[path] = None
            while len(self._downloaded) > self.LIMIT:
                self._downloaded.pop(next(iter(self._downloaded)))

    def update_files(self, links: dict[str, str], scripts: dict[str, str | None],
                     deleted: list[str]) -> None:
        """Links made by this command; scripts it wrote (``None``: written with text
        not known, so no longer what was remembered); paths it deleted."""
        with self._lock:
            for path in deleted:
                self._links.pop(path, None)
                self._scripts.pop(path, None)
            for path, target in links.items():
                self._links.pop(path, None)
                self._links[path] = target
                self._scripts.pop(path, None)
            for path, text in scripts.items():
                self._scripts.pop(path, None)
                if text is not None and len(text) <= self.SCRIPT_BYTES:
                    self._scripts[path] = text
            while len(self._links) > self.LIMIT:
                self._links.pop(next(iter(self._links)))
            while len(self._scripts) > self.SCRIPT_LIMIT:
                self._scripts.pop(next(iter(self._scripts)))


class Analyzer:
    """Accumulates everything found in one command, across decoding levels."""

    def __init__(self, raw: str, memory: CallMemory | None = None) -> None:
        self.raw = raw
        self.memory = memory
        self.names: dict[str, None] = {}
        self.argv: dict[str, None] = {}
        self.redirects: dict[str, None] = {}
        self.payloads: dict[str, None] = {}
        self.interp: dict[str, None] = {}
        self.features: dict[str, None] = {}
        self.urls: dict[str, None] = {}
        self.sudo_names: dict[str, None] = {}
        self.exec_names: dict[str, None] = {}
        self.names_log: list[str] = []  # names in first-seen order (slices stay cheap)
        self.deadline = time.thread_time() + TIME_BUDGET
        self.shell_payload_written = False
        self.coproc_net = False  # a coprocess of this shell is a network client
        self.last_ssh_remote = ""
        self.extra_text: list[str] = []
        # Parsed facts for rules (see acts.py): "PROGRAM ARG" tokens, subcommands, what
        # is written/deleted/re-moded, which hosts are contacted, what persists.
        self.args: dict[str, None] = {}
        self.run_args: dict[str, None] = {}
        self.subcmds: dict[str, None] = {}
        self.acts = Acts()
        self.persists: dict[str, None] = {}
        self.net_words: list[str] = []
        # Code written to files (heredocs, echo > f): judged only if the file is run.
        self.pending_code: list[str] = []
        self.written: dict[str, list[str]] = {}
        self.executed: dict[str, str] = {}  # path -> the program that runs it ("" direct)
        # make, npm test, pytest...: (argv, PYTHONPATH, directory) of runners that run
        # files by convention (runners.py); `cd d` moves where later ones start
        self.runner_calls: list[tuple[list[str], dict[str, str], str]] = []
        self.run_dir = "."
        # Renamed copies of programs made in this command (cp /usr/bin/ssh ./x): x -> ssh.
        self.aliases: dict[str, str] = dict(memory.aliases()) if memory is not None else {}
        self.prior_aliases = dict(self.aliases)  # made by earlier calls (CallMemory)
        self.ssh_configs: dict[str, None] = {}  # files given to ssh -F
        self.nc_modes: list[str] = []  # netcat invocations in order: listen / connect
        # Credential stores a `find` names (-name id_rsa*, -path '*/.aws/credentials'):
        # read when its output goes to a reader (-exec cat, | xargs cat).
        self.found_creds: list[str] = []
        self.data_vars: set[str] = set()  # shell variables holding a file's content
        self.path_dirs: dict[str, None] = {}  # directories put on PATH (normalised)
        self.downloaded: dict[str, None] = {}  # files a downloader wrote
        self.links: dict[str, str] = {}  # links made now: link path -> its target
        # How files were written (for what a later call runs): appended to (>>, tee -a),
        # truncated first (>), edited in place (sed -i: the text is not the whole file).
        self.appended: set[str] = set()
        self.truncated: set[str] = set()
        self.edited: set[str] = set()
        self.git_added: list[str] = []  # paths given to `git add` (".", -A, commit -a)
        self.monitor_search = False  # pgrep/pidof/grep for bastion's own process names
        self.prior_downloads: set[str] = set()  # ... in an earlier call (CallMemory)
        self.run_code: list[str] = []  # source code that runs (submitted, or written+run)
        self.stub_links: dict[str, None] = {}  # paths made copies/links of true/false
        self.remote_mounts: dict[str, None] = {}  # local dirs that are a remote host's
        self.server_configs: dict[str, None] = {}  # configs handed to a web server
        self.parse_error = False
        self.stdin_paths: list[str] = []  # files the simple command being run reads on stdin
        self.depth = 0
        self.budget = MAX_TEXT
        self.nodes = 0

    # ------------------------------------------------------------ entry points

    def run(self, argv: list[str] | None = None) -> dict[str, Any]:
        """Analyse the command (``argv`` given: the program and its arguments as exec
        receives them, with no shell between; else ``raw`` is a shell command line)."""
        if argv is None:
            self.analyse_text(self.raw, 0, env={})
            if self.parse_error or _SOURCE_CODE.match(self.raw):
                self.code_text(self.raw, 0, {})
        elif sum(len(a) + 1 for a in argv) > MAX_ARGV:
            self.feature("oversize")
        else:
            # Each argument is what the program receives: code only where the program
            # runs it (sh -c, python -c: analysed as such, within the text budget), data
            # otherwise (printf's 1 MiB of text is printed, not parsed as shell).
            self.simple(list(argv), 0, {})
        self._repl_input()
        for code in [*self.interp, *self.run_code]:
            self._code_writes(code)
        fetched = list(self.downloaded)
        if self.memory is not None:
            for path in self.memory.downloaded():  # fetched by an earlier call
                if path not in self.acts.writes and path not in self.acts.deletes \
                        and path not in self.downloaded:
                    self.downloaded.setdefault(path)
                    self.prior_downloads.add(path)
        prior = self._prior_scripts()
        self._written_files()
        clientconf.judge_written(self)  # a .curlrc/.wgetrc/git config that sends a key
        for path, (text, how) in prior.items():
            self._run_written(path, [text], how)  # written by an earlier call, run now
        self._run_by_convention()  # a Makefile's recipe, a test module, a setup.py
        if self.memory is not None:
            self.memory.update(fetched, [p for p in [*self.acts.writes, *self.acts.deletes]
                                         if p not in fetched])
        # The raw command leads the text (kept for evidence and the index's scan; no
        # rule may match a substring of it, see rules/loader.py).
        text_parts = [*self.argv, *self.redirects, *self.payloads, *self.interp,
                      *self.extra_text]
        if self.parse_error or self.raw not in text_parts:
            text_parts.insert(0, self.raw)
        text = "\n".join(text_parts)
        # What runs: argv of programs, code that is executed. Not heredoc bodies or text
        # that is only printed or written to a file that nothing runs.
        run_text = "\n".join([*self.argv, *self.interp])
        if _PRIV_SHELL.search(run_text):
            self.feature("privileged_shell")
        for code in [*self.interp, *self.run_code]:
            _code_file_acts(code, self.acts)  # os.rename('grader', ...), open(p, 'w')
            _code_credential_reads(code, self.acts)  # open F, "<", ".ssh/id_rsa" (perl...)
            _code_reads(code, self.acts)  # io.open("x"), readFileSync("x"), open(F, "<x")
            self._secret_sender(code)
            self._file_sender(code)
            for m in _CODE_ENDPOINT.finditer(code):  # ("203.0.113.10", 4444) in code
                self.acts.hosts.setdefault(m.group(1).lower())
            for m in _CODE_NAMED_HOST.finditer(code):  # PeerAddr => "host"
                self.acts.hosts.setdefault(m.group(1).lower())
            for m in _CODE_PORT_HOST.finditer(code):  # net.connect(22, 'h'), socket h 80
                self.acts.hosts.setdefault((m.group(1) or m.group(2)).lower())
        if _SHELLCODE_RAW.match(self.raw):
            self.feature("shellcode_literal")  # machine code submitted as the command
        for part in [*self.net_words, *self.interp, *self.run_code]:
            for m in _URL.finditer(part):
                self.urls.setdefault(m.group())
                for h in hosts_in(m.group()):
                    self.acts.hosts.setdefault(h)
            for m in _HOSTPORT.finditer(part):
                self.urls.setdefault(m.group())
                self.acts.hosts.setdefault(m.group().rsplit(":", 1)[0].lower())
        for r in self.redirects:  # bash connects wherever /dev/tcp/HOST/PORT names
            m = _DEVTCP_HOST.search(r)
            if m:
                self.acts.hosts.setdefault(m.group(1).strip("[]").lower())
        hosts = self.acts.hosts
        if hosts and all(h in _LOOPBACK or h.startswith("127.") for h in hosts):
            self.feature("loopback_only")  # every host it contacts is this machine
        elif hosts and self.features.keys() & {"devtcp", "nc_connect"} and any(
                a.startswith(("echo ", "printf ")) and STRATUM_METHOD.search(a)
                for a in self.argv):
            # the shell's own connection (/dev/tcp, nc) fed the Stratum protocol's
            # JSON-RPC: a pool client in builtins, however the text was decoded
            self.feature("shell_stratum")
        if self.coproc_net and self.exec_names.keys() & {"eval", "source", ".", *SHELLS}:
            # what the network client reads is read back by this shell and run: the
            # remote end chooses the commands (a reverse shell without a pipe to sh)
            self.feature("coproc_remote_commands")
        self._code_links()
        self._through_links()
        self._secret_copies()
        # what acts on another process by pid: signals, limits, priority, CPU set, trace
        signals = {"kill", "pkill", "killall", "prlimit", "renice", "taskset", "ionice", "chrt",
                   "cpulimit", "gdb", "strace", "ltrace", "gcore"} & self.exec_names.keys() or any(
            _CODE_KILL.search(c) for c in [*self.interp, *self.run_code])
        if signals and (self.monitor_search or any(
                _CODE_MONITOR_NAME.search(c) for c in [*self.interp, *self.run_code])):
            self.feature("monitor_signal")  # the monitor's pids, found by name, signalled
        if self.memory is not None:
            scripts = {path: self._file_text(path) for path in self.acts.writes}
            self.memory.update_files(self.links, scripts, list(self.acts.deletes))
            made = {k: v for k, v in self.aliases.items() if self.prior_aliases.get(k) != v}
            self.memory.update_aliases(made, [_basename(p) for p in
                                              [*self.acts.writes, *self.acts.deletes]])
        _expand_credential_globs(self.acts)
        return {
            "cmd.raw": self.raw,
            "cmd.names": list(self.names),
            "cmd.argv": list(self.argv),
            "cmd.text": text,
            "cmd.redirects": list(self.redirects),
            "cmd.payloads": list(self.payloads),
            "cmd.interp_code": list(self.interp),
            "cmd.features": list(self.features),
            "cmd.parse_error": self.parse_error,
            "cmd.depth": self.depth,
            "cmd.urls": list(self.urls),
            "cmd.sudo_names": list(self.sudo_names),
            "cmd.exec_names": list(self.exec_names),
            "cmd.args": list(self.args),
            "cmd.run_args": list(self.run_args),
            "cmd.subcommands": list(self.subcmds),
            # every path read, written, deleted or re-moded is also a path of the command
            "cmd.paths": list({**self.acts.paths, **self.acts.reads, **self.acts.writes,
                               **self.acts.deletes, **self.acts.modes}),
            "cmd.reads": list(self.acts.reads),
            "cmd.writes": list(self.acts.writes),
            "cmd.deletes": list(self.acts.deletes),
            "cmd.modes": list(self.acts.modes),
            "cmd.hosts": list(self.acts.hosts),
            "cmd.persists": list(self.persists),
        }

    def _record(self, name: str, argv: list[str]) -> None:
        """Parsed facts of one simple command (the program already unwrapped)."""
        args = argv[1:65]
        tokens = [f"{name} {a[:512]}" for a in args]
        tokens += [f"{name} {a.split('=', 1)[1][:512]}" for a in args
                   if a.startswith("--") and "=" in a]
        tokens += [f"{name} {a}" for a in option_tokens(name, args)]
        for t in tokens:
            self.args.setdefault(t)
        if name not in TEXT_TOOLS:
            # Arguments of programs that act (a text tool's arguments are data: `grep
            # --donate-level README`, `echo 'ssh -R ...'`).
            for t in tokens:
                self.run_args.setdefault(t)
        for sub in subcommands(name, args):
            self.subcmds.setdefault(sub[:512])
        if name not in _WRAPPERS:
            argv_acts(name, argv, self.acts)
        if "config" in args[:4] and (name in ("pip", "pip3", "npm", "yarn", "pnpm", "uv")
                                     or (name.startswith("python") and "pip" in args[:3])):
            self._config_set(name, argv)
        if name in ("ln", "link", "cp"):
            for link, target in _link_pairs(name, args):
                self.links[link] = target
        if name == "git":
            ops = [a for a in args if not a.startswith("-")]
            if ops[:1] == ["add"]:
                self.git_added.extend(norm_path(a) if a != "." else "." for a in ops[1:])
                self.git_added.extend(a for a in args if a in ("-A", "--all"))
            elif ops[:1] == ["commit"] and any(a == "-a" or a == "--all" or re.fullmatch(r"-[a-zA-Z]*a[a-zA-Z]*", a)
                                               for a in args):
                self.git_added.append("-a")
        if name in ("pgrep", "pidof", "grep", "egrep", "pkill", "killall") and any(
                w in _MONITOR_NAMES for a in args if not a.startswith("-")
                for w in re.split(r"[^\w-]+", re.sub(r"\[(\w)\]", r"\1", a))):  # grep [s]upervisor
            self.monitor_search = True  # looking up the monitor's pids by its name
        if name in ("sqlite3", "sqlite", "duckdb", "psql", "mysql", "mariadb") and "(" in " ".join(args):
            # SQL that reads or writes files: readfile('p'), load_file('p'), pg_read_file,
            # writefile('p', x), INTO OUTFILE 'p'
            for a in args:
                for m in _SQL_FILE_READ.finditer(a):
                    self.acts.reads.setdefault(norm_path(m.group(1)))
                for m in _SQL_FILE_WRITE.finditer(a):
                    self.acts.write(norm_path(m.group(1)))
        if name == "kill":
            rest = list(args)
            if rest[:1] in (["-s"], ["-n"]):
                rest = rest[2:]
            elif rest and rest[0].startswith("-") and rest[0] != "--":
                rest = rest[1:]  # the signal
            if rest[:1] == ["--"]:
                rest = rest[1:]
            if "-1" in rest:
                self.feature("signal_all")  # kill -9 -1: every process it may signal
        if name == "tee" and any(a in ("-a", "--append") for a in args):
            self.appended.update(norm_path(a) for a in args if not a.startswith("-"))
        if name in ("cp", "ln", "install", "mv", "rsync"):
            ops = [a for a in args if not a.startswith("-")]
            if len(ops) == 2 and _basename(ops[0]) in ("true", "false", ":"):
                self.stub_links.setdefault(norm_path(ops[1]))
            if len(ops) == 2 and ops[0].startswith("/") and not ops[1].endswith("/"):
                src, dst = _basename(ops[0]), _basename(ops[1])
                if src != dst and src and dst:
                    self.aliases[dst] = src
        if name not in ("ssh", "autossh", "dbclient", "plink") and len(args) >= 2:
            self._forward_spec(args)
        if name not in TEXT_TOOLS:
            self.net_words.extend(args)
        # What this command runs as a program: a script given to a shell or interpreter,
        # a path run directly, sources compiled.
        if "/" in argv[0]:
            self.executed.setdefault(norm_path(argv[0]), "")
        if name in SHELLS and _shell_noexec(args):
            pass  # `bash -n x.sh`: a syntax check reads the script, runs nothing
        elif name in SHELLS or interpreter_lang(name) is not None or name in ("source", "."):
            for a in args:
                if not a.startswith("-") and not (name in SHELLS and a.startswith("+")):
                    self.executed.setdefault(norm_path(a), "sh" if name in ("source", ".")
                                             else name)
                    break
        elif name in _COMPILERS:
            for a in args:
                if not a.startswith("-"):
                    self.executed.setdefault(norm_path(a), name)
        elif args[:1] and args[0] in ("run", "exec", "execute", "eval") and name not in TEXT_TOOLS:
            for a in args[1:]:  # `v run f.v`, `cargo run`, `dotnet run x.cs`
                if not a.startswith("-"):
                    self.executed.setdefault(norm_path(a), name)
        if name == "git":
            self._git_config(args)
        self._proxies(name, args)
        for i, a in enumerate(args[:-1]):
            if a in _COMMAND_OPTS:
                self.analyse_text(args[i + 1], self.depth + 1, {}, "option_command")
        if name in ("export", "declare", "typeset", "local", "readonly"):
            for a in args:
                key, eq, value = a.partition("=")
                if eq:
                    self.assignment(key, value)
        if name == "alias":
            for a in args:
                key, eq, value = a.partition("=")
                if eq and key in _RUNNER_NAMES:
                    self.feature("test_runner_shadow")
        if name in ("sftp", "ftp", "lftp", "tftp", "smbclient", "psftp", "ncftp"):
            for a in args:
                if _STORE_COMMAND.search(a):
                    self.feature("remote_store_command")
        if name == "aws":
            ops = [a for a in args if not a.startswith("-")]
            if ops[:1] == ["s3"] and len(ops) >= 4 and ops[1] in ("cp", "mv", "sync") and \
                    not ops[2].startswith("s3://") and ops[3].startswith("s3://"):
                self.feature("cloud_upload")
        if name in ("gsutil", "gcloud"):
            ops = [a for a in args if not a.startswith("-")]
            if name == "gcloud" and ops[:1] == ["storage"]:
                ops = ops[1:]
            if len(ops) >= 3 and ops[0] in ("cp", "mv", "rsync") and \
                    not ops[1].startswith("gs://") and ops[-1].startswith("gs://"):
                self.feature("cloud_upload")
        if _serves_sensitive_root(name, args):
            self.feature("serves_sensitive_root")
        if name in ("sshfs", "curlftpfs", "s3fs", "gcsfuse", "goofys", "rclone") and \
                (name != "rclone" or args[:1] == ["mount"]):
            ops = [a for a in args if not a.startswith("-")]
            if name == "rclone":
                ops = ops[1:]
            if len(ops) >= 2 and (":" in ops[0] or name in ("s3fs", "gcsfuse", "goofys")):
                self.remote_mounts.setdefault(norm_path(ops[1].rstrip("/") or "/"))
        if name in ("nginx", "httpd", "apache2", "lighttpd", "caddy"):
            for i, a in enumerate(args[:-1]):
                if a in ("-c", "-f", "--config"):
                    self.server_configs.setdefault(norm_path(args[i + 1]))
        if name == "wget" and not any(a in ("-O", "--output-document", "-o") or
                                      a.startswith(("-O", "--output-document=")) for a in args):
            for a in args:
                if "://" in a:
                    base = a.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
                    if base and "." in base and "://" not in base:
                        self.downloaded.setdefault(norm_path(base))
        if name in ("crontab", "scrontab") and not any(
                a in ("-l", "-r", "-V", "-T", "--help", "-h") for a in args):
            self.persists.setdefault("cron")

    _FWD_SPEC = re.compile(r"^(?:[\w.*\[\]:-]+:)?\d{1,5}:[\w.\[\]:-]+:\d{1,5}$|^(?:[\w.*-]+:)?\d{1,5}$")

    def _forward_spec(self, args: list[str]) -> None:
        """``-R|-L [bind:]port:host:hostport`` / ``-D port`` given to any program with a
        ``user@host`` destination: ssh's forwarding, whatever the binary is called."""
        if not any(re.match(r"^(?:[\w.-]+@)?[\w.-]+\.[\w.-]+$|^[\w.-]+@[\w.-]+$", a) for a in args):
            return
        for i, a in enumerate(args[:-1]):
            if a in ("-R", "-L", "-D") and self._FWD_SPEC.match(args[i + 1]):
                if a == "-D" or args[i + 1].count(":") >= 2:
                    self.feature(self._SSH_FWD[a[1]])

    _PROXY_OPTS = frozenset({"-x", "--proxy", "--socks4", "--socks4a", "--socks5",
                             "--socks5-hostname", "--preproxy", "--proxy-server", "--proxy_host",
                             "-http-proxy", "--http-proxy", "--https-proxy", "--all-proxy",
                             "--proxy-url", "-proxy"})
    _PROXY_VARS = re.compile(r"(?i)^(?:https?|all|ftp|socks|rsync|wss?)_proxy$")

    def _proxies(self, name: str, args: list[str]) -> None:
        """Traffic sent through a proxy that is not on this machine (curl -x, --proxy-server,
        *_proxy variables): under the sandbox policy that is a tunnel."""
        for i, a in enumerate(args):
            key, eq, value = a.partition("=")
            if eq and self._PROXY_VARS.match(key):
                if _remote_proxy(value):
                    self.feature("remote_proxy")
            elif key in self._PROXY_OPTS and (name not in ("curl", "curlie") or True):
                if name in ("curl", "curlie") and key == "-x" or key != "-x":
                    if not eq:
                        value = args[i + 1] if i + 1 < len(args) else ""
                    if _remote_proxy(value):
                        self.feature("remote_proxy")

    def assignment(self, name: str, value: str) -> None:
        """A variable assignment (prefix, plain or exported)."""
        if self._PROXY_VARS.match(name) and _remote_proxy(value):
            self.feature("remote_proxy")
        if name in ("HISTFILE", "HISTSIZE", "HISTFILESIZE", "SAVEHIST") and \
                value.strip("'\"") in ("", "/dev/null", "0"):
            self.feature("history_disabled")
        if name == "PATH":
            for d in value.split(":"):
                if d and not d.startswith("$"):
                    self.path_dirs.setdefault(norm_path(d.rstrip("/") or "/"))

    def _git_config(self, args: list[str]) -> None:
        """``git config KEY VALUE`` (and ``-c KEY=VALUE``) that makes git run a program."""
        i = 0
        while i < len(args) and args[i].startswith("-"):
            if args[i] == "-c" and i + 1 < len(args):
                key, _, value = args[i + 1].partition("=")
                if git_config_runs_code(key, value) and key.strip().lower() != "alias":
                    self.feature("git_inline_exec_config")
                i += 2
                continue
            i += 2 if args[i] in ("-C", "--git-dir", "--work-tree") else 1
        if i >= len(args) or args[i] != "config":
            return
        rest = [a for a in args[i + 1:] if not a.startswith("-")]
        if len(rest) >= 2 and git_config_runs_code(rest[0], rest[1]):
            self.persists.setdefault("git_config")

    def _written_files(self) -> None:
        """Judge what was written where: code in a file that the command then runs is
        code that runs; content in a persistence location is persistence when it runs
        code later (shared judgement with the file sensor, analysis/persistence.py)."""
        if any(a in self.args for a in _EXEC_MODES):
            known = self.memory.scripts() if self.memory is not None else {}
            for path in self.acts.modes:
                if classify_path(path) != "git_hook":
                    continue
                # git runs only executable hooks: making one executable counts unless
                # its content, written here or by an earlier call, is judged harmless
                same = _workspace_spellings(path)  # ./x, /workspace/x, ~/x: one file
                texts = self.written.get(path) or [known[p] for p in same if p in known][:1]
                if not texts or any(t is None or runs_code("git_hook", t) for t in texts):
                    self.persists.setdefault("git_hook")
        for path in self.acts.writes:
            cls = classify_path(path)
            if cls is None and path.rsplit("/", 1)[-1] in GIT_HOOK_NAMES:
                # a hook written into a directory a core.hooksPath may name (set before
                # or after): judged by what it runs, like one in .git/hooks
                texts = self.written.get(path)
                if texts and path not in self.downloaded \
                        and any(t is not None and runs_code("git_hook", t) for t in texts):
                    self.persists.setdefault("git_hook")
                continue
            if cls is None:
                continue
            texts = self.written.get(path)
            if path in self.downloaded:
                texts = None  # fetched: whatever the server sends
            if texts is None:
                if runs_code(cls, None) or (cls == "git_hook" and path in self.downloaded):
                    self.persists.setdefault(cls)
            elif any(runs_code(cls, t) for t in texts):
                self.persists.setdefault(cls)
        for path, texts in self.written.items():
            base = path.rsplit("/", 1)[-1]
            for text in texts:
                self._package_index(package_index_hosts(path, text))
                if not text:
                    continue
                if (path in self.ssh_configs or path.endswith("/.ssh/config")) \
                        and _SSH_CONFIG_EXEC.search(text):
                    self.persists.setdefault("ssh_config_exec")  # runs on every ssh
                if base in (".npmrc", ".yarnrc", ".yarnrc.yml") and _NPM_RUNS.search(text):
                    self.persists.setdefault("node_preload")  # every npm-run node loads it
        for path, texts in self.written.items():
            # A program put where PATH finds it (a bin directory, or one this command puts
            # on PATH) that fetches and runs code: whatever it is named after (git,
            # python, ls), every later use runs the download first.
            parent = path.rsplit("/", 1)[0]
            if (("/bin/" in path and not path.startswith(("./", "/tmp/"))) or parent in self.path_dirs) \
                    and self.depth < MAX_DEPTH and any(
                    t and len(t) < 16384 and _fetches_and_runs(t) for t in texts):
                self.persists.setdefault("path_program_exec")
        for mount in self.remote_mounts:
            if any(w == mount or w.startswith(mount + "/") for w in self.acts.writes):
                self.feature("remote_copy_push")  # files copied into a remote mount
        for path, texts in self.written.items():
            if path in self.server_configs and any(t and _SERVES_ROOT.search(t) for t in texts):
                self.feature("serves_sensitive_root")
            # A test hook that rewrites outcomes (conftest.py, plugin, sitecustomize).
            if HOOK_FILES.search(path) and any(t and alters_test_outcomes(t) for t in texts):
                self.feature("test_outcome_hook")
            if path.endswith((".py", ".pth")) and any(t and patches_test_runner(startup_code(path, t))
                                                       for t in texts):
                self.feature("test_runner_patch")  # e.g. the solution module patches pytest
            # A pytest configuration that loads a plugin or changes what is collected.
            if any(t and overrides_test_run(path.rsplit("/", 1)[-1], t) for t in texts):
                self.feature("test_config_override")
            # A runner's name (pytest, python) written where PATH finds it first.
            base = path.rsplit("/", 1)[-1]
            if _same_runner(base, self.aliases.get(base, "")):
                continue  # `ln -s $(command -v python3) ~/bin/python`: the real one, renamed
            if base in _RUNNER_NAMES and ("/bin/" in path or path.rsplit("/", 1)[0] in self.path_dirs) \
                    and (any(t for t in texts) or path in self.stub_links
                         or path.rsplit("/", 1)[0] in self.path_dirs):
                # A stand-in script (or a link to true) where the runner is looked up;
                # a copy of a real interpreter into a virtualenv's bin is not.
                self.feature("test_runner_shadow")
            # A web shell is planted by writing it: a server runs it on request later.
            if any(t and web_shell(t) for t in texts):
                self.feature("web_shell_code")
            # An ssh config read by every later `ssh host` (or given with -F here).
            if (path in self.ssh_configs or path.endswith("/.ssh/config")) and any(
                    t and _SSH_CONFIG_FWD.search(t) for t in texts):
                self.feature("ssh_config_forward")
        modes = {p.rsplit("/", 1)[-1] for p in self.acts.modes}
        ran_names = {p.rsplit("/", 1)[-1] for p in self.executed}
        # a file an earlier call fetched counts when this one runs it (not compiles it)
        ran_now = {p.rsplit("/", 1)[-1] for p, how in self.executed.items()
                   if how not in _COMPILERS}
        for path in self.downloaded:
            base = path.rsplit("/", 1)[-1]
            if path in self.prior_downloads:
                if base in ran_now or (base in modes and any(a in self.args for a in _EXEC_MODES)):
                    self.feature("download_then_run")
                continue
            if path in self.executed or base in ran_names or (
                    base in modes and any(a in self.args for a in ("chmod +x", "chmod u+x",
                                                                  "chmod a+x", "chmod 755",
                                                                  "chmod 777", "chmod 700"))):
                self.feature("download_then_run")
        ran = {p.rsplit("/", 1)[-1]: how for p, how in self.executed.items()}
        for path, texts in list(self.written.items()):
            how = self.executed.get(path, ran.get(path.rsplit("/", 1)[-1]))
            if how is None:  # (a Makefile's recipes, package.json's scripts: code too)
                self._written_program([*texts, *(c for t in texts
                                                 for c in runners.convention_code(path, t))])
                continue
            if path in self.appended:
                texts = [*texts, self._file_text(path) or ""]  # the file as a whole, too
            self._run_written(path, texts, how)

    def _file_text(self, path: str) -> str | None:
        """The whole text of ``path`` after this command, where it is known: what it
        wrote last, or, for appends, what an earlier call left there (CallMemory) and
        what this one added (`printf 'cu' > x` ... `printf 'rl ...' >> x` over calls)."""
        texts = self.written.get(path)
        if not texts or any(t is None for t in texts) or path in self.edited:
            return None
        if path not in self.appended:
            return texts[-1] or None
        base = ""
        if path not in self.truncated and self.memory is not None:
            base = self.memory.scripts().get(path) or ""  # unknown before: what we know
        return (base + "".join(texts)) or None

    def _prior_scripts(self) -> dict[str, tuple[str, str]]:
        """Scripts an earlier call wrote (CallMemory) that this command runs, and are not
        rewritten or deleted by it first: path -> (text, the program that runs it)."""
        if self.memory is None:
            return {}
        ran = {p.rsplit("/", 1)[-1]: how for p, how in self.executed.items()}
        out: dict[str, tuple[str, str]] = {}
        for path, text in self.memory.scripts().items():
            if path in self.written or path in self.acts.writes or path in self.acts.deletes:
                continue
            how = self.executed.get(path, ran.get(path.rsplit("/", 1)[-1]))
            if how is not None:
                out[path] = (text, how)
        return out

    def _run_written(self, path: str, texts: list[str], how: str) -> None:
        """Code written to ``path`` runs (by ``how``: a shell, an interpreter, a compiler,
        "" for the path run directly): it is judged as the code that runs. A shell script
        sees its own path as ``$0`` (``"$(dirname "$0")"/../tests``)."""
        self.feature("written_then_run")
        for text in texts:
            if not text:
                continue
            self.code_text(text, 1, {})
            shell = how in SHELLS or (how == "" and not _SOURCE_CODE.match(text) and not (
                text.startswith("#!") and not re.match(r"#!\s*\S*/(?:env\s+)?(?:ba|da|z|k)?sh\b",
                                                       text)))
            if shell:
                self.analyse_text(text, 1, {"0": path}, "written_script")
            elif how and how not in _COMPILERS and len(text) <= 65536:
                # code kept in a data file and exec'd after a transform
                # (`exec(open('notes.txt').read()[::-1])`): judged as what it decodes to
                for decoded in decodings(text):
                    if decoded != text:
                        self.code_text(decoded, 1, {})

    def _note_runner(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        """A runner started here (make, npm, pytest, python -m ...), or a `cd` that moves
        where the next ones start."""
        if name in ("cd", "pushd"):
            dest = next((a for a in argv[1:] if not a.startswith("-")), None)
            if dest and "$" not in dest:
                self.run_dir = runners.canon(posixpath.join(self.run_dir, dest)
                                             if not dest.startswith(("/", "~")) else dest)
            return
        if len(self.runner_calls) < 64:
            self.runner_calls.append((list(argv[:256]), {k: v for k, v in env.items()
                                                         if k == "PYTHONPATH"}, self.run_dir))

    def _run_by_convention(self) -> None:
        """Known files (written now, or by an earlier call) that the runners of this
        command run by convention: a Makefile's recipes for the targets named, a
        package.json script, the test modules unittest/pytest discover, setup.py under
        `pip install .`, a sitecustomize.py on PYTHONPATH (runners.py). Each is judged as
        the code that runs, like a script run by name; scripts that code runs in turn (a
        recipe's `python3 tools/x.py`, `$(MAKE) -C sub`) are followed, a few rounds."""
        if not self.runner_calls:
            return
        known = self.memory.scripts() if self.memory is not None else {}
        for path in [*self.acts.writes, *self.acts.deletes]:
            known.pop(path, None)  # replaced or removed by this command: not that text
        for path in self.written:
            text = self._file_text(path)
            if text is not None:
                known[path] = text
        if not known:
            return
        by_canon = {runners.canon(p): p for p in known}
        by_base = {p.rsplit("/", 1)[-1]: p for p in known}
        judged: set[tuple[str, str]] = set()
        done, ran = 0, set(self.executed)
        for _ in range(4):
            calls, done = self.runner_calls[done:], len(self.runner_calls)
            named = {p: h for p, h in self.executed.items() if p not in ran}
            ran = set(self.executed)
            if not calls and not named:
                return
            found = [f for argv, env, cwd in calls
                     for f in runners.suite_members(runners.find_runs(argv, known, cwd, env))]
            for path, how in named.items():  # run by name by the code judged last round
                key = by_canon.get(runners.canon(path)) or by_base.get(path.rsplit("/", 1)[-1])
                if key is not None:
                    found.append(runners.Found(key, known[key], how, "run by name"))
            for f in found[:runners.MAX_FOUND]:
                if (f.path, f.code) in judged:
                    continue
                judged.add((f.path, f.code))
                self._run_written(f.path, [f.code], f.how)
                if f.test_run and patches_test_runner(f.code):
                    self.feature("test_runner_patch")  # loaded into the test run itself

    def _code_links(self) -> None:
        """Links made by code that runs: os.symlink/os.link(T, L), fs.symlinkSync(T, L),
        File.symlink(T, L), perl symlink(T, L), Path(L).symlink_to(T)."""
        for code in [*self.interp, *self.run_code]:
            if "link" not in code:
                continue
            folded = fold_path_constants(code[:65536])
            for m in _CODE_LINK.finditer(folded):
                target, link = (m.group(2), m.group(4)) if m.group(2) else (m.group(8), m.group(6))
                lp, tp = norm_path(link), norm_path(target)
                if lp and tp and lp != tp:
                    self.links[lp] = tp
                    self.acts.writes.setdefault(lp)
                    self.acts.paths.setdefault(tp)

    def _secret_copies(self) -> None:
        """A file made from a credential store (cp, split, base64 > f, tar) is the secret:
        reading it later (an upload of the pieces in another call) reads the credential,
        and pushing a commit that holds it sends it. The files written by a command that
        reads a credential are its copies (remembered for later calls, CallMemory)."""
        acts = self.acts
        known = self.memory.secrets() if self.memory is not None else {}
        creds = [r for r in acts.reads if _is_credential(r)]
        made = {w: creds[0] for w in acts.writes if creds and not _is_credential(w)}
        secrets = {**known, **made}
        if secrets:
            for r in list(acts.reads):
                for path, origin in secrets.items():
                    if path in made:
                        continue  # a copy made now is read by its own maker: not twice
                    if r == path or fnmatch.fnmatchcase(r, path) or fnmatch.fnmatchcase(path, r):
                        acts.reads.setdefault(origin)
        staged = False
        for path in self.git_added:
            if path in (".", "./", "-A", "--all", "-a") and (secrets or creds):
                staged = True
            elif path in secrets or _is_credential(path) or any(
                    fnmatch.fnmatchcase(path, s) or fnmatch.fnmatchcase(s, path) for s in secrets):
                staged = True
        pushed = "git push" in self.subcmds
        if pushed and (staged or (self.memory is not None and self.memory.staged_secret())):
            self.feature("secret_pushed")  # a commit holding a credential sent to a remote
        if self.memory is not None:
            self.memory.update_secrets(made, [*acts.writes, *acts.deletes], staged)

    def _through_links(self) -> None:
        """A link is its target: reading, writing or chmod-ing a link (made now or by an
        earlier call, CallMemory) reads, writes or re-modes what it points at. Deleting
        or replacing a link does not touch the target. Code that names a link in a
        string literal opens it (``configparser.read('config.ini')``)."""
        links = {**(self.memory.links() if self.memory is not None else {}), **self.links}
        if not links:
            return
        ordered = sorted(links, key=len, reverse=True)

        def target(path: str) -> str | None:
            for link in ordered:
                if path == link or path.startswith(link.rstrip("/") + "/"):
                    return links[link] + path[len(link):]
            return None

        acts = self.acts
        for code in [*self.interp, *self.run_code]:
            for m in _CODE_PATH_LITERAL.finditer(code[:65536]):
                path = norm_path(m.group(2))
                if path in links and path not in acts.writes:
                    acts.reads.setdefault(path)
        made = set(self.links)
        for kind in (acts.reads, acts.writes, acts.modes, acts.paths):
            for path in list(kind):
                if kind is not acts.reads and path in made or (
                        kind is acts.paths and path in acts.deletes):
                    continue  # `ln -sf T L` and `rm L` touch the link L, not T
                resolved = target(path)
                if resolved is not None and resolved != path:
                    kind.setdefault(resolved)

    def _package_index(self, hosts: list[str]) -> None:
        """Later installs will fetch from ``hosts`` (a written pip.conf, an rc line
        exporting PIP_INDEX_URL, `npm config set registry`): a lasting change of where
        code comes from. The rule compares the hosts with the policy's allow list; an
        index on this machine is the agent's own."""
        remote = [h for h in hosts if h not in _LOOPBACK and not h.startswith("127.")]
        if remote:
            self.persists.setdefault("package_index")
            for h in remote:
                self.persists.setdefault(f"index_host:{h}")

    def _config_set(self, name: str, argv: list[str]) -> None:
        """`pip config set KEY URL`, `npm/yarn/pnpm config set KEY URL` (options skipped)."""
        ops = [a for a in argv[1:] if not a.startswith("-")]
        if name.startswith("python") and "pip" in ops:
            ops = ops[ops.index("pip") + 1:]  # python3 -m pip config set ...
        if len(ops) >= 4 and ops[0] == "config" and ops[1] == "set":
            self._package_index(config_command_index_hosts(ops[2], ops[3]))
        elif len(ops) == 3 and ops[0] == "config" and ops[1] == "set" and "=" in ops[2]:
            key, _, value = ops[2].partition("=")  # npm config set registry=URL
            self._package_index(config_command_index_hosts(key, value))

    def _code_writes(self, code: str) -> None:
        """Interpreter code that writes a literal to a file (``open('conftest.py',
        'w').write('...')``, ``Path('x').write_text('...')``) wrote that content: it is
        judged as if written with a heredoc (hooks, persistence, programs)."""
        for m in _CODE_RUNS_FILE.finditer(code[:MAX_CODE]):
            # exec(open('x').read()), runpy.run_path('x'), perl `do "x"`: x's code runs
            self.executed.setdefault(norm_path(next(g for g in m.groups() if g)), "python")
        for m in _CODE_DOWNLOAD_TO.finditer(code[:MAX_CODE]):
            # urlretrieve(URL, 'tool'), getstore/mirror(URL, "x"): a downloader wrote it
            path = norm_path(m.group(1) or m.group(2))
            self.downloaded.setdefault(path)
            self.acts.write(path)
        if ".write" not in code:
            return
        folded = fold_path_constants(code[:65536])  # p = os.path.join(...); open(p, 'w')
        for m in _CODE_LITERAL_WRITE.finditer(folded):
            path = m.group("p1") or m.group("p2")
            body = m.group("b")
            try:
                text = ansi_c(body)  # the literal's \n, \t, \x.. escapes
            except Exception:  # an odd escape: keep the raw text
                text = body
            self.written.setdefault(norm_path(path), []).append(text)
            self.acts.writes.setdefault(norm_path(path))

    def _written_program(self, texts: list[str]) -> None:
        """A program written now and run later (a write_file tool call, a heredoc into
        a .py) whose code has one purpose only, judged when it is written because the
        run may come from another call, under another name: a shell wired to a socket
        to another host, or a setuid(0) followed by a shell. Other written code is
        judged only when it runs."""
        for text in texts:
            if not text or len(text) > 262144:
                continue
            feats = code_features(text)
            if feats & {"interp_http", "interp_upload", "interp_socket"}:
                reads = Acts()
                _code_file_acts(text, reads)
                _code_credential_reads(text, reads)
                _expand_credential_globs(reads)
                if any(_is_credential(r) for r in reads.reads):
                    self.feature("secret_sender_program_written")
            if "interp_setuid_root" in feats:
                self.feature("setuid_shell_program_written")
            if "interp_hash_spin" in feats:
                self.feature("hash_spin_program_written")  # a nonce search, run later
            if "interp_stratum" in feats:
                self.feature("stratum_program_written")  # a pool client, run later
            if "interp_relay" in feats:
                # accepts, dials another host and copies between them: a port forwarder
                hosts = [m.group(1).lower() for m in _CODE_ENDPOINT.finditer(text)]
                hosts += [m.group(1).lower() for m in _CODE_NAMED_HOST.finditer(text)]
                hosts += [(m.group(1) or m.group(2)).lower() for m in _CODE_PORT_HOST.finditer(text)]
                if any(h not in _LOOPBACK and not h.startswith("127.") for h in hosts):
                    self.feature("relay_program_written")
            if {"interp_socket_dup", "interp_shell"} <= feats or "interp_socket_exec" in feats:
                # a shell wired to a socket (dup'd stdio, or lines read and run)
                hosts = [m.group(1).lower() for m in _CODE_ENDPOINT.finditer(text)]
                hosts += [m.group(1).lower() for m in _CODE_NAMED_HOST.finditer(text)]
                hosts += [(m.group(1) or m.group(2)).lower() for m in _CODE_PORT_HOST.finditer(text)]
                if not hosts or not all(h in _LOOPBACK or h.startswith("127.") for h in hosts):
                    self.feature("socket_shell_program_written")

    def _file_sender(self, code: str) -> None:
        """One program that reads a file (a literal path, any language) and sends data
        over a socket or HTTP: the file's content may leave (judged with the hosts by
        exfil.covert_channel). Two programs in one command, one fetching and one reading
        what was fetched, are not one sender."""
        feats = code_features(code[:MAX_CODE])
        if "interp_upload" not in feats or not feats & {"interp_socket", "interp_http"}:
            return
        reads = Acts()
        _code_file_acts(code, reads)
        _code_reads(code, reads)
        _code_credential_reads(code, reads)
        if reads.reads:
            self.feature("interp_file_send")

    def _secret_sender(self, code: str) -> None:
        """Code that runs, reads a credential store and talks to another host (socket,
        HTTP client, upload): the read is for sending (perl IO::Socket POST of a key)."""
        feats = code_features(code[:MAX_CODE])
        lookups = "getaddrinfo" in code or "gethostby" in code or "resolve" in code.lower() \
            or "lookup" in code
        if not feats & {"interp_http", "interp_upload", "interp_socket"} and not lookups:
            return
        reads = Acts()
        _code_file_acts(code, reads)
        _code_credential_reads(code, reads)
        _expand_credential_globs(reads)
        if not any(_is_credential(r) for r in reads.reads):
            return
        if lookups and _DATA_LOOKUP.search(code[:MAX_CODE]):
            # a name to resolve built from data, in code that reads a key: the key leaves
            # in DNS labels (the resolver carries them to the domain's name server)
            self.feature("interp_secret_send")
            return
        hosts = [m.group(1).lower() for m in _CODE_ENDPOINT.finditer(code)]
        hosts += [m.group(1).lower() for m in _CODE_NAMED_HOST.finditer(code)]
        hosts += [h for m in _URL.finditer(code) for h in hosts_in(m.group())]
        hosts += [m.group().rsplit(":", 1)[0].lower() for m in _HOSTPORT.finditer(code)]
        if any(h not in _LOOPBACK and not h.startswith("127.") for h in hosts):
            self.feature("interp_secret_send")

    def _repl_input(self) -> None:
        """``tclsh\n<code>`` / ``sudo debugfs\n!/bin/sh``: lines typed into a program.

        Only the first few lines can start such a session (bounded work on long input).
        """
        raw = self.raw
        if "\n" not in raw:
            return
        start = 0
        for _n in range(32):
            end = raw.find("\n", start)
            if end < 0:
                return
            line = raw[start:end]
            start = end + 1
            words = line.split()
            if not words:
                continue
            if _basename(words[0]) in ("sftp", "ftp", "lftp", "tftp", "smbclient", "psftp") and \
                    _STORE_COMMAND.search(raw[start:start + 16384]):
                self.feature("remote_store_command")
            sudo = words[0] in ("sudo", "doas")
            if sudo and len(words) > 1:
                words = words[1:]
            prog = _basename(words[0])
            repl = interpreter_lang(prog) is not None and len(words) == 1
            if not (repl or sudo):
                continue
            rest = raw[start:start + 16384]
            if repl:
                self.interp.setdefault(rest[:8192])
                self.feature("repl_input")
                for feat in code_features(rest):
                    self.feature(feat)
            if re.search(r"(?m)^\s*!\s*/?\S*sh\b|^\s*!\s*(?:ba|z|da)?sh\b|^\s*:?shell\b", rest):
                self.feature("keystroke_shell_escape")
            if sudo and prog not in RUNNERS and (
                    _SHELL_REF.search(rest) or re.search(r"(?m)(?:^|;)\s*(?:/bin/)?(?:ba|da|z)?sh\b", rest)
                    or rest.split("\n", 1)[0].strip() == _SHELL_KEYS.get(prog)):
                self.feature("sudo_shell_escape")

    def feature(self, name: str) -> None:
        self.features.setdefault(name)

    def add_name(self, name: str) -> None:
        if name not in self.names:
            self.names[name] = None
            self.names_log.append(name)

    def out_of_time(self) -> bool:
        if time.thread_time() > self.deadline:
            self.feature("analysis_timeout")
            self.parse_error = True
            return True
        return False

    def analyse_text(self, text: str, depth: int, env: dict[str, str] | None = None,
                     why: str | None = None) -> None:
        """Parse ``text`` as shell and walk it at ``depth``."""
        if depth > MAX_DEPTH:
            self.feature("depth_limit")
            return
        if depth > 0:
            stripped = text.strip()
            if stripped.startswith(("$(", "`", "<(")) and stripped.endswith((")", "`")):
                # Code computed at run time from a substitution we already walked.
                self.feature("dynamic_code")
                if set(re.findall(r"[A-Za-z0-9_.+-]+", stripped)) & DOWNLOADERS:
                    self.feature("download_to_shell")
                elif _substitution_program(stripped) in DNS_QUERY_TOOLS:
                    # a name server's answer run as code: DNS as the download channel
                    self.feature("download_to_shell")
                return
            self.payloads.setdefault(text if len(text) <= 4096 else text[:4096])
            if why:
                self.feature(why)
        if len(text) > self.budget:
            self.feature("oversize")
            text = text[: max(self.budget, 0)]
        self.budget -= len(text)
        if not text.strip():
            return
        self.depth = max(self.depth, depth)
        walk_env = dict(env or {})
        for piece in _pieces(text):
            if len(piece) > PARSE_CHUNK and not (_HEREDOC_START.search(piece[:PARSE_CHUNK])
                                                and len(piece) <= MAX_TEXT):
                self.feature("oversize")
                piece = piece[:PARSE_CHUNK]
            if self.out_of_time():
                return
            data = piece.encode("utf-8", "surrogatepass")
            root = self._parse(data)
            if root is None:
                return
            if root.has_error:
                self.parse_error = True
                self.feature("parse_error")
                data, root = self._closed_quote(data, root)
            _Walk(self, data, depth, walk_env).visit(root)

    def _closed_quote(self, data: bytes, root: tree_sitter.Node
                      ) -> tuple[bytes, tree_sitter.Node]:
        """Text that fails to parse only because a quote is never closed (`ssh h 'cat
        >x"`, a typo or a truncated line) is read as the line it would be with the quote
        closed at its end: what it asks for is still judged. Otherwise the partial parse
        stands (and parse_error stays set either way)."""
        if len(data) > PARSE_CHUNK:
            return data, root
        for quote in (b"'", b'"'):
            if data.count(quote) % 2 == 0:
                continue
            fixed = data.rstrip(b"\n") + quote
            alt = self._parse(fixed)
            if alt is not None and not alt.has_error:
                return fixed, alt
        return data, root

    def _parse(self, data: bytes) -> tree_sitter.Node | None:
        """Parse with the command's deadline; None (and a feature) when it runs out."""
        deadline = self.deadline
        try:
            parser = _parser()
            tree = parser.parse(lambda offset, _point: data[offset:offset + 65536],
                                 progress_callback=lambda *_: time.thread_time() > deadline)
        except ValueError:  # cancelled by the progress callback: out of time
            parser.reset()  # or the next parse would resume this one
            self.feature("parse_timeout")
            self.parse_error = True
            self.feature("parse_error")
            return None
        return tree.root_node

    # ------------------------------------------------------------ simple commands

    def simple(self, argv: list[str], depth: int, env: dict[str, str],
               stdin: str | None = None, sudo: bool = False) -> str | None:
        """Record one simple command; follow what it runs. Returns its static stdout."""
        if not argv:
            return None
        m = _BRACE.match(argv[0]) if "," in argv[0] else None
        if m and len(argv) == 1:
            argv = m.group(1).split(",")
            self.feature("brace_obfuscation")
        if any(ch.isspace() for ch in argv[0]) and argv[0].strip():
            words = _CAPTURE_SPLIT.split(argv[0].strip())
            if len(words) > 2 and _basename(words[0]) in SHELLS and words[1] == "-c":
                # bash${IFS}-c${IFS}'cmd args': the quoted command stays one field
                words = [words[0], "-c", " ".join(words[2:])]
            argv = [*words, *argv[1:]]
        self.argv.setdefault(" ".join(argv))
        name = _basename(argv[0])
        self.add_name(name)
        real = self.aliases.get(name)
        if real is not None and real != name:
            # A renamed copy runs with the capabilities of what it copies.
            self.feature("renamed_binary")
            name = real
            argv = [real, *argv[1:]]
            self.add_name(name)
        if name in clientconf.CLIENTS:  # curl -K f, ~/.curlrc, wget -e, git -c: merged
            argv = clientconf.client_argv(self, name, argv, env, stdin)
        self._record(name, argv)
        if runners.watched(name):
            self._note_runner(name, argv, env)
        if name in _WRAPPERS or not (
                (len(argv) > 1 and argv[1] in INERT_ARGS)
                or (len(argv) == 2 and argv[1] in ("-v", "-V"))
                or argv[-1] in ("-h", "--help", "-help")):
            self.exec_names.setdefault(name)
        if sudo:
            self.sudo_names.setdefault(name)
        if name == "busybox" and len(argv) > 1:
            return self.simple(argv[1:], depth, env, stdin, sudo)
        if interpreter_lang(name) == "awk":
            for path in _awk_runs_input(argv):
                self.executed.setdefault(path, "sh")  # each line of it is a command
        if name in _EDITORS:
            for path in _editor_writes(name, argv[1:], stdin):
                self.acts.write(path)
        if name == "run-parts":
            shell = _run_parts_shell(argv)
            if shell is not None:
                # run-parts runs every program of DIR its --regex selects: from a bin
                # directory, a shell (with its --arg options)
                return self.simple(shell, depth, env, stdin, sudo)
        located = _locates(name, argv)
        if located is not None:
            # `command -v curl`, `which curl`: prints where curl is and runs nothing, so
            # `cp $(command -v curl) ./x` copies curl (a renamed copy, see aliases)
            return located
        for sub in hosted_programs(name, argv):  # gdb -ex 'python CODE': code run in-process
            self.feature("hosted_code")
            self.simple(sub, depth + 1, env)
        loaded = loader_program(name, argv)
        if loaded:  # ld-linux-x86-64.so.2 PROG ARGS runs PROG (hosts.loader_program)
            self.feature("loader_exec")
            return self.simple(loaded, depth, env, stdin, sudo)
        if name == "coproc":
            inner = _coproc_command(argv)
            if not inner:
                return None
            if _basename(inner[0]) in NET_CLIENTS | {"openssl"}:
                self.coproc_net = True  # its output is read by this shell (see run())
            return self.simple(inner, depth, env, stdin, sudo)
        if name in _WRAPPERS:
            if name == "exec" and "-a" in argv[1:3]:
                self.feature("exec_argv0")  # exec -a NAME: the process lies about its name
            inner = self._unwrap(name, argv)
            if name in ("sudo", "doas", "pkexec", "runuser"):
                self.feature("sudo")
            if name in ("torsocks", "proxychains", "proxychains4", "torify", "tsocks"):
                self.feature("proxy_wrapper")
            if name == "nohup" or name == "setsid":
                self.feature("detached")
            if name in ("sudo", "doas", "pkexec", "run0"):
                target = inner  # through plain runners: `sudo env nice /bin/sh`
                while target and _basename(target[0]) in _WRAPPERS and _basename(target[0]) \
                        not in SHELLS and _basename(target[0]) not in ("sudo", "doas", "su"):
                    target = self._unwrap(_basename(target[0]), target)
                if _requests_root_shell(name, argv[:len(argv) - len(inner)] + target, target):
                    self.feature("root_shell_request")
            if inner:
                elevating = name in ("sudo", "doas", "pkexec", "runuser")
                before = len(self.names_log)
                # Only the program sudo runs directly counts as "run under sudo".
                out = self.simple(inner, depth, env, stdin, elevating)
                if name in ("sudo", "doas", "pkexec"):
                    self._check_sudo_escape(inner, before, stdin)
                return out
            return None
        if name == "su" and _su_targets_root(argv):
            self.feature("root_shell_request")
        if name == "su" or name == "runuser":
            for i, a in enumerate(argv[1:], 1):
                if a in ("-c", "--command", "-s", "--shell") and i + 1 < len(argv):
                    if a in ("-c", "--command"):
                        self.analyse_text(argv[i + 1], depth + 1, env, "shell_c")
                    else:
                        self.add_name(_basename(argv[i + 1]))
            return None
        if name in SHELLS:
            return self._shell(argv, depth, env, stdin)
        if stdin and name in ("sftp", "ftp", "lftp", "tftp", "smbclient", "psftp", "ncftp") \
                and _STORE_COMMAND.search(stdin):
            self.feature("remote_store_command")
        if name in ("ssh", "autossh"):
            self._ssh(argv, depth, env)
            if stdin and any(a in ("-F/dev/stdin", "-F-") or (a == "-F" and argv[i + 2:i + 3] and argv[i + 2]
                             in ("/dev/stdin", "-", "/dev/fd/0")) for i, a in enumerate(argv[1:])):
                # ssh -F /dev/stdin <<EOF: the here-doc is the config it reads
                self.written.setdefault("/dev/stdin", []).append(stdin)
                self.ssh_configs.setdefault("/dev/stdin")
        if name in ("scp", "rsync", "pscp"):
            self._remote_copy(name, argv)
        if name in ("nc", "ncat", "netcat", "nc.traditional", "nc.openbsd", "pwncat", "rcat"):
            self._netcat(argv)
        elif self._exec_on_connection(argv):
            # A renamed netcat: `-e SHELL HOST PORT` is the capability, whatever the name.
            self.feature("nc_exec")
            self.feature("nc_exec_shell")
        if name == "git":
            for i, a in enumerate(argv[:-1]):
                if a == "-c" and argv[i + 1].lower().startswith("core.sshcommand="):
                    self.analyse_text(argv[i + 1].split("=", 1)[1], depth + 1, env, "ssh_command")
        if name in ("source", ".") and len(argv) > 1:
            self._sourced(argv[1])
        if name == "eval":
            self.feature("eval")
            if "$(" in " ".join(argv[1:]):
                words = set(re.findall(r"[A-Za-z0-9_.+-]+", " ".join(argv[1:])))
                if words & DOWNLOADERS:
                    self.feature("download_to_shell")
            self.analyse_text(" ".join(argv[1:]), depth + 1, env, "eval_payload")
            return None
        if name in ("ls", "echo", "printf", "realpath", "readlink", "stat") and len(argv) > 1:
            # `ls ~/.ssh/id_* | grep -v pub | xargs cat`: credential stores named to a
            # reader downstream are read (like find -name id_rsa* | xargs cat)
            hits = [norm_path(a) for a in argv[1:65] if not a.startswith("-")
                    and _is_credential(norm_path(a))]
            if hits:
                self.found_creds = hits
        if name in ("find", "fd") or name.endswith("find"):
            hits = _found_credentials(argv) if name in ("find", "bfs", "gfind") else []
            if hits:
                self.found_creds = hits
            self._find_exec(argv, depth, env, False, hits)
            if name in ("find", "bfs", "gfind") and _setid_search(argv):
                self.feature("setid_enumeration")
        if name == "getcap" and "-r" in argv[1:] and any(_system_tree(a) for a in argv[1:]):
            self.feature("setid_enumeration")  # file capabilities: the other way to root
        lang = interpreter_lang(name)
        if lang is not None:
            self._interpreter(lang, argv, depth, env, stdin)
            if lang == "python" and "-m" in argv[1:3]:
                i = argv.index("-m")
                mod = argv[i + 1] if i + 1 < len(argv) else ""
                if mod in ("zipfile", "tarfile") and "-c" in argv[i + 2:i + 4]:
                    # python3 -m zipfile -c out.zip .ssh .aws: an archiver reading trees
                    rest = argv[argv.index("-c", i + 2) + 1:]
                    argv_acts("zip", ["zip", "-r", *rest], self.acts)
        if name in ("dirname", "basename") and len(argv) == 2 and "$" not in argv[1] \
                and not argv[1].startswith("-"):
            # a path's parts are known statically: "$(dirname "$0")"/../tests
            path = argv[1].rstrip("/") or "/"
            return (posixpath.dirname(path) or ".") if name == "dirname" else _basename(path)
        if name in ("echo", "printf"):
            out = self._echo(name, argv)
            self.pending_code.append(out)
            return out
        if name in _B64_DECODERS or name in ("xxd", "rev", "cat", "tac", "tr"):
            return self._transform(name, argv, stdin)
        if name in ("sed", "head", "tail", "awk", "gawk", "mawk"):
            picked = selected_lines(self, name, argv, stdin)  # a known file's line
            if picked is not None:
                return picked
        self._literal_payloads(argv[1:], depth, env)
        self._program_escapes(argv[1:], depth, env)
        return None

    _ESCAPE_ARG = re.compile(r"^\s*(?:\.shell|\.system|\\?!|:!|:shell\b|:call\s+system\()\s*(.*)$", re.DOTALL)

    def _program_escapes(self, args: list[str], depth: int, env: dict[str, str]) -> None:
        """Arguments that a program hands to a shell (sqlite3 '.shell', vi -c ':!cmd')."""
        for a in args:
            m = self._ESCAPE_ARG.match(a)
            if m and m.group(1).strip():
                self.feature("program_shell_escape")
                self.analyse_text(m.group(1).strip().strip("'\")").rstrip(")"), depth + 1, env,
                                  "program_shell_escape")

    def _check_sudo_escape(self, inner: list[str], before: int, stdin: str | None) -> None:
        """A shell reached *through* a sudo'd program that is not a plain runner: in its
        arguments, in what it reads on stdin, or in a file an earlier statement wrote."""
        target = _basename(inner[0])
        if "=" in target:
            target = next((_basename(a) for a in inner if "=" not in a), target)
        if target in RUNNERS or target in SHELLS:
            return
        spawned = [n for n in self.names_log[before:] if n in SHELLS]
        if target == "sed" and _sed_executes(inner[1:]):
            self.feature("sudo_shell_escape")  # GNU sed's `e` runs commands (as root)
            return
        if any(f"{target} {a}" in COMMAND_OPTIONS for a in inner[1:]):
            self.feature("sudo_shell_escape")  # `sudo dvips -R0 x.dvi`: runs what x asks
            return
        if (spawned or _SHELL_REF.search(" ".join(inner[1:]))
                or (stdin is not None and _SHELL_REF.search(stdin)) or self.shell_payload_written):
            self.feature("sudo_shell_escape")

    def _remote_copy(self, name: str, argv: list[str]) -> None:
        """scp/rsync: local operands copied to a remote last operand is a push."""
        operands: list[str] = []
        i = 1
        while i < len(argv):
            a = argv[i]
            if a in _SCP_ARG:
                i += 2
                continue
            if a.startswith("-"):
                i += 1
                continue
            operands.append(a)
            i += 1
        if len(operands) < 2:
            return
        last = _REMOTE.match(operands[-1])
        if not last or ("@" not in operands[-1] and re.fullmatch(r"[A-Za-z]", last.group(1))):
            return  # C:\path is a Windows drive, not a host
        host = last.group(1).lower()
        if host in ("localhost", "127.0.0.1", "::1", "[::1]"):
            return
        if any(_REMOTE.match(o) for o in operands[:-1]):
            self.feature("remote_copy_between_hosts")
            return
        self.feature("remote_copy_push")

    def _unwrap(self, name: str, argv: list[str]) -> list[str]:
        takes = _WRAPPERS[name]
        i = 1
        skip = _SKIP_OPERANDS.get(name, 0)
        while i < len(argv):
            a = argv[i]
            if name in ("env", "sudo", "doas") and "=" in a and not a.startswith("-") \
                    and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", a):
                self.argv.setdefault(a)
                i += 1
                continue
            if a == "--":
                i += 1
                break
            if a.startswith("-") and len(a) > 1:
                if name == "env" and a in ("-S", "--split-string") and i + 1 < len(argv):
                    return _CAPTURE_SPLIT.split(argv[i + 1].strip()) + argv[i + 2:]
                if a in takes:
                    i += 2
                else:
                    i += 1
                continue
            if skip:
                skip -= 1
                i += 1
                continue
            break
        if name == "exec" and i >= len(argv):
            return []
        return argv[i:]

    def _shell(self, argv: list[str], depth: int, env: dict[str, str],
               stdin: str | None) -> str | None:
        args = argv[1:]
        for i, a in enumerate(args):
            if a == "-c" or (a.startswith("-") and not a.startswith("--") and "c" in a[1:]
                             and len(a) <= 5):
                if i + 1 < len(args):
                    self.feature("shell_c")
                    self.analyse_text(args[i + 1], depth + 1, env, "shell_c_payload")
                    return None
            if a in ("-i",) or (a.startswith("-") and "i" in a[1:] and len(a) <= 4
                                and not a.startswith("--")):
                self.feature("interactive_shell")
            if a == "-p":
                self.feature("privileged_shell")
            if not a.startswith("-"):
                if a.startswith("/dev/tcp") or a.startswith("/dev/udp"):
                    self.feature("devtcp")
                self._sourced(a)
                self.extra_text.append(f"script {a}")
                break
        if stdin is not None:
            self.analyse_text(stdin, depth + 1, env, "stdin_to_shell")
        return None

    _SSH_ARG = frozenset("BbcDEeFIiJLlmOopQRSWw")
    _SSH_FWD = {"L": "ssh_forward_local", "R": "ssh_forward_remote", "D": "ssh_forward_dynamic",
                "w": "ssh_tun", "W": "ssh_stdio_forward", "J": "ssh_jump"}
    _SSH_OPT = {"localforward": "ssh_forward_local", "remoteforward": "ssh_forward_remote",
                "dynamicforward": "ssh_forward_dynamic", "tunnel": "ssh_tun",
                "proxyjump": "ssh_jump", "proxycommand": "ssh_proxy_command",
                "localcommand": "ssh_local_command", "permitlocalcommand": "ssh_local_command",
                "gatewayports": "ssh_gateway_ports"}

    def _ssh(self, argv: list[str], depth: int, env: dict[str, str]) -> None:
        """OpenSSH option parsing: options before *and right after* the destination."""
        i = 1
        dest = None
        name = _basename(argv[0])
        if name == "autossh":
            self.feature("autossh")
        while i < len(argv):
            a = argv[i]
            if a.startswith("-") and len(a) > 1 and a != "--":
                j = 1
                while j < len(a):
                    flag = a[j]
                    if flag in self._SSH_FWD:
                        self.feature(self._SSH_FWD[flag])
                    if flag == "N":
                        self.feature("ssh_no_command")
                    if flag == "M" and name == "autossh":
                        pass
                    if flag in self._SSH_ARG:
                        value = a[j + 1:] if j + 1 < len(a) else (argv[i + 1] if i + 1 < len(argv) else "")
                        if j + 1 >= len(a):
                            i += 1
                        if flag == "F" and value:
                            self.ssh_configs.setdefault(norm_path(value))
                        if flag == "o":
                            key, _, val = value.replace(" ", "=", 1).partition("=")
                            feat = self._SSH_OPT.get(key.strip().lower())
                            if feat == "ssh_proxy_command":
                                # A relay (nc %h %p, ssh -W, socat...) is a tunnel; a
                                # ProxyCommand that only runs a local shell is not.
                                before = len(self.names_log)
                                self.analyse_text(val, depth + 1, env, "ssh_command")
                                ran = set(self.names_log[before:])
                                if ran & (NET_CLIENTS | {"connect-proxy", "corkscrew",
                                                         "proxytunnel", "ncat", "nc"}) \
                                        or "%h" in val or "%p" in val:
                                    self.feature(feat)
                                feat = None
                            if feat and not (feat == "ssh_gateway_ports" and val.lower() == "no"):
                                self.feature(feat)
                            if key.strip().lower() == "localcommand" and val:
                                self.analyse_text(val, depth + 1, env, "ssh_command")
                        break
                    j += 1
                i += 1
                continue
            if dest is None:
                dest = a
                i += 1
                continue
            if len(argv) > i:
                self.feature("ssh_remote_command")
                self.last_ssh_remote = " ".join(argv[i:])
                self.extra_text.append("ssh-remote " + self.last_ssh_remote)
            break

    @staticmethod
    def _exec_on_connection(argv: list[str]) -> bool:
        """``PROG [-l] -e|--exec|--sh-exec SHELL [HOST] PORT``: a program told to run a shell
        on a connection it makes or accepts."""
        args = argv[1:]
        for i, a in enumerate(args[:-1]):
            if a in ("-e", "--exec", "--sh-exec"):
                prog = args[i + 1].split()[0] if args[i + 1].split() else ""
                if _basename(prog) not in SHELLS:
                    return False
                rest = [x for x in args[:i] + args[i + 2:] if not x.startswith("-")]
                return bool(rest) and rest[-1].isdigit() and int(rest[-1]) < 65536
        return False

    def _netcat(self, argv: list[str]) -> None:
        operands = []
        for i, a in enumerate(argv[1:], 1):
            if a in ("-e", "-c", "--exec", "--sh-exec", "--lua-exec") or (
                    re.fullmatch(r"-[a-zA-Z]*[ec]", a) and not a.startswith("--")):
                self.feature("nc_exec")
                prog = argv[i + 1].split()[0] if i + 1 < len(argv) and argv[i + 1].split() else ""
                if prog:
                    self.add_name(_basename(prog))
                if _basename(prog) in SHELLS or interpreter_lang(_basename(prog)) or a == "--lua-exec":
                    self.feature("nc_exec_shell")
            elif re.fullmatch(r"-[a-zA-Z]*l[a-zA-Z]*", a) or a == "--listen":
                self.feature("nc_listen")
            elif re.fullmatch(r"-[a-zA-Z]*z[a-zA-Z]*", a):
                self.feature("nc_scan")
            elif not a.startswith("-"):
                operands.append(a)
        listening = any(re.fullmatch(r"-[a-zA-Z]*l[a-zA-Z]*", a) or a == "--listen"
                        for a in argv[1:])
        self.nc_modes.append("listen" if listening else "connect" if operands else "")
        if operands and "nc_listen" not in self.features:
            self.feature("nc_connect")

    def _sourced(self, arg: str) -> None:
        """A shell runs a script given as ``<(...)`` or ``/dev/stdin``: what feeds it?"""
        if arg.startswith(("<(", "/dev/fd/", "/proc/self/fd/")) or arg == "/dev/stdin":
            self.feature("shell_runs_stream")
            words = set(re.findall(r"[A-Za-z0-9_.+-]+", arg))
            if words & DOWNLOADERS:
                self.feature("download_to_shell")

    def _find_exec(self, argv: list[str], depth: int, env: dict[str, str], sudo: bool,
                   found: list[str] | None = None) -> None:
        selected = _find_selection(argv) if _basename(argv[0]) in ("find", "bfs", "gfind") else None
        i = 0
        while i < len(argv):
            if argv[i] in ("-exec", "-execdir", "-ok", "-okdir"):
                j = i + 1
                sub: list[str] = []
                while j < len(argv) and argv[j] not in (";", "+", "\\;"):
                    sub.append(argv[j])
                    j += 1
                if sub:
                    self.feature("find_exec")
                    if selected is not None and argv[i] in ("-exec", "-ok"):
                        # {} is each file find selects: `find tests -name 'test_*.py'
                        # -exec perl -pi ... {} +` edits tests/test_*.py
                        sub = [a.replace("{}", selected) for a in sub]
                    self.simple(sub, depth, env, sudo=sudo)
                    if found and _basename(sub[0]) in FILE_READERS:
                        for path in found:  # -exec cat {} on what it found by name
                            self.acts.reads.setdefault(path)
                i = j
            i += 1

    def _interpreter(self, lang: str, argv: list[str], depth: int, env: dict[str, str],
                     stdin: str | None) -> None:
        codes = interpreter_code(lang, argv)
        if stdin is not None and (len(argv) == 1 or "-" in argv[1:]):
            codes.append(stdin)
        # the same code with its spelled-out constants folded ('wg' + 'et', fromhex):
        # judged beside the code as written
        codes += [f for c in codes[:8] if c and (f := fold_strings(c[:MAX_CODE])) != c[:MAX_CODE]]
        for code in codes:
            if not code:
                continue
            stripped = code.strip()
            if stripped.startswith(("$(", "`")):
                self.feature("dynamic_code")
                if set(re.findall(r"[A-Za-z0-9_.+-]+", stripped)) & DOWNLOADERS:
                    self.feature("download_to_shell")
                continue
            if len(code) > MAX_CODE:
                self.feature("oversize")  # past what one exec argument can carry
            self.interp.setdefault(code[:MAX_CODE])
            self.feature("interp_code")
            self.feature(f"interp_{lang}")
            for feat in code_features(code):
                self.feature(feat)
            if lang == "python" and code_tampers_test_framework(code[:MAX_CODE]):
                self.feature("test_runner_patch")  # rewrites pytest or plants a [pytest11]
            for cmd in embedded_commands(code)[:16]:
                self.analyse_text(cmd, depth + 1, env, "interp_shell_payload")
            for lit in re.findall(r"['\"]([A-Za-z0-9+/=_-]{16,})['\"]", code)[:8]:
                decoded = try_base64(lit)
                if decoded:
                    self.feature("base64_literal")
                    self.analyse_text(decoded, depth + 1, env, "decoded_payload")

    def code_text(self, text: str, depth: int, env: dict[str, str]) -> None:
        """Program text that runs: submitted as the command itself, typed into a REPL, or
        written to a file that the same command then runs or compiles.

        Source code for a reverse shell is as telling when it is written to a file and
        compiled as when it is passed with -c, so it gets the same inspection. (Text that
        is only written, and never run, does not come here: see ``_written_files``.)
        """
        if len(text) < 12 or not re.search(r"[(;{`]", text):
            return
        folded = fold_strings(text[:MAX_CODE])
        if folded != text[:MAX_CODE]:
            text = folded  # constants spelled out ('wg' + 'et', fromhex) read as written
        feats = code_features(text)
        if feats & {"interp_socket", "interp_exec", "interp_http", "interp_hash",
                    "web_shell_code", "shellcode_literal", "set_proc_name",
                    "interp_namespace", "interp_memfd_exec", "interp_timestomp",
                    "interp_history_wipe"}:
            self.feature("code_text")
            self.run_code.append(text[:MAX_CODE])
            for feat in feats:
                self.feature(feat)
            for cmd in embedded_commands(text)[:16]:
                self.analyse_text(cmd, depth + 1, env, "interp_shell_payload")

    def _echo(self, name: str, argv: list[str]) -> str:
        args = argv[1:]
        if name == "printf":
            if args and args[0] == "-v":
                args = args[2:]
            out = printf_format(args[0], args[1:]) if args else ""
            if out != (args[0] if args else ""):
                self.feature("printf_escape")
                self.extra_text.append(out)
            return out
        escapes = False
        while args and re.fullmatch(r"-[neE]+", args[0]):
            escapes = escapes or "e" in args[0]
            args = args[1:]
        out = " ".join(args)
        if escapes:
            decoded = echo_e(out)
            if decoded != out:
                self.feature("echo_escape")
                self.extra_text.append(decoded)
            out = decoded
        return out

    def _transform(self, name: str, argv: list[str], stdin: str | None) -> str | None:
        args = argv[1:]
        if name == "cat" or name == "tac":
            return stdin if not args or args == ["-"] else None
        if stdin is None:
            return None
        decoding = any(a in ("-d", "--decode", "-D", "-r", "-revert", "-p", "-ps", "-rp", "-pr")
                       or re.fullmatch(r"-[a-z]*d[a-z]*", a) for a in args)
        if name == "rev":
            self.feature("reversed_text")
            out = "\n".join(line[::-1] for line in stdin.splitlines())
            self.extra_text.append(out)
            return out
        if name == "tr":
            # a character map (rot13, a shuffled alphabet) turns text into a command:
            # what tr would print is what the next program reads
            out = _tr_translate(args, stdin)
            if out is not None and out != stdin:
                self.feature("translated_text")
                self.extra_text.append(out)
            return out
        if name == "xxd":
            if "-r" in " ".join(args):
                out = try_hex(stdin)
                if out is not None:
                    self.feature("hex_decode")
                    self.extra_text.append(out)
                return out
            return None
        if name == "openssl" and not (args and args[0] in ("base64", "enc")):
            return None
        if decoding:
            out = try_base64(stdin)
            if out is not None:
                self.feature("base64_decode")
                self.extra_text.append(out)
            return out
        return None

    def _literal_payloads(self, args: list[str], depth: int, env: dict[str, str]) -> None:
        for i, a in enumerate(args):
            if not i & 63 and self.out_of_time():
                return
            if len(a) >= 95 and _WALLET.search(a):
                self.feature("wallet_address")
            if looks_like_base64(a):
                decoded = try_base64(a)
                if decoded and re.search(r"[ /;|]", decoded):
                    self.feature("base64_literal")
                    self.analyse_text(decoded, depth + 1, env, "decoded_payload")


def _substitution_program(text: str) -> str:
    """The program a ``$(...)``/backtick substitution runs first (its first word after
    variable assignments), or ""."""
    inner = text[2:] if text.startswith(("$(", "<(")) else text[1:]
    for word in inner.split():
        if "=" in word.split("/")[0] and not word.startswith(("-", "'", '"')):
            continue  # NAME=value before the program
        return word.rsplit("/", 1)[-1].strip("'\"")
    return ""


def _tr_set(spec: str) -> str | None:
    """The characters of a ``tr`` SET, ranges and escapes expanded (None if it uses a
    form this does not model: classes, equivalence, repeats, or more than 4096 chars)."""
    if "[" in spec:
        return None
    chars: list[str] = []
    i = 0
    while i < len(spec):
        c = spec[i]
        if c == "\\" and i + 1 < len(spec):
            c = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(spec[i + 1], spec[i + 1])
            i += 1
        if i + 2 < len(spec) and spec[i + 1] == "-":
            end = spec[i + 2]
            if ord(end) < ord(c) or ord(end) - ord(c) > 4096:
                return None
            chars.extend(chr(x) for x in range(ord(c), ord(end) + 1))
            i += 3
        else:
            chars.append(c)
            i += 1
        if len(chars) > 4096:
            return None
    return "".join(chars)


def _tr_translate(args: list[str], text: str) -> str | None:
    """What ``tr SET1 SET2`` prints for ``text`` (plain translation only: -d, -s, -c
    are not a character map and give None)."""
    if len(args) != 2 or any(a.startswith("-") and len(a) > 1 for a in args):
        return None
    src, dst = _tr_set(args[0]), _tr_set(args[1])
    if not src or not dst:
        return None
    dst = (dst + dst[-1] * len(src))[:len(src)]  # tr repeats SET2's last character
    table: dict[int, str] = {}
    for a, b in zip(src, dst):
        table[ord(a)] = b
    return text.translate(table)


# Programs a grader runs to score: a file by this name where PATH finds it first (or an
# alias) replaces the grader's runner.
def _same_runner(name: str, source: str) -> bool:
    """A copy or link named ``name`` of the real program ``source`` that does the same
    job (python -> python3.11, py.test -> pytest): a shim, not a stand-in."""
    def family(n: str) -> str:
        return "python" if n.startswith("python") else "pytest" if n in (
            "pytest", "py.test", "pytest-3") else n
    return bool(source) and source in _RUNNER_NAMES and family(name) == family(source)


_RUNNER_NAMES = frozenset({"pytest", "py.test", "python", "python3", "nosetests", "tox",
                           "unittest", "pytest-3", "python3.10", "python3.11", "python3.12"})

_CODE_NAMED_HOST = re.compile(r"(?i)(?:peeraddr|peerhost|host|hostname|address|addr)['\"]?\s*(?:=>|=|:)\s*"
                              r"['\"]((?:\d{1,3}\.){3}\d{1,3}|[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63}){1,8}|localhost)['\"]")
# Port-first and tcl spellings of a destination: net.connect(22, '203.0.113.22'),
# socket HOST PORT.
_CODE_PORT_HOST = re.compile(r"(?:connect|createConnection|Socket)\(\s*\d{1,5}\s*,\s*['\"]([^'\"\s]{1,253})['\"]"
                             r"|\bsocket\s+(?!-)([A-Za-z0-9][\w.-]{0,252})\s+\d{1,5}\b")
_SHELLCODE_RAW = re.compile(r"^\s*(?:\\x[0-9a-fA-F]{2}){24,}")
_CODE_ENDPOINT = re.compile(r"['\"]((?:\d{1,3}\.){3}\d{1,3}|localhost|[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})"
                            r"{1,8}|::1)['\"]\s*[,:]\s*\d{1,5}\b", re.IGNORECASE)
_STORE_COMMAND = re.compile(r"(?im)(?:^|[;\n]|\s-c\s)\s*(?:put|mput|reput|append|send)\s+\S")
_FILE_SERVERS = frozenset({"http-server", "updog", "uploadserver", "webfsd", "httpd",
                           "darkhttpd", "miniserve", "serve", "static-web-server", "caddy"})
_SENSITIVE_ROOTS = frozenset({"/", "/etc", "/root", "/home", "~", "$HOME", "${HOME}", "/var",
                              "/proc", "/sys"})


_SETID_NUMERIC = re.compile(r"^[-/+]?0?[2-7][0-7]{3}$")
_SETID_SYMBOLIC = re.compile(r"^[-/+]?(?:[ugoa]*[=+][rwxXt]*s[rwxXts]*)(?:,[ugoa]*[=+-][rwxXts]*)*$")
_SYSTEM_TREES = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/opt", "/etc", "/home", "/root",
                 "/var", "/snap", "/srv", "/boot")


def _system_tree(path: str) -> bool:
    """A search root that is the system (``/``, ``/usr``...), not the agent's own tree."""
    p = path.rstrip("/") or "/"
    return p == "/" or p in _SYSTEM_TREES or p.startswith(tuple(t + "/" for t in _SYSTEM_TREES))


def _setid_search(argv: list[str]) -> bool:
    """find over the system for files with the setuid/setgid bit (``-perm -4000``,
    ``-perm /u=s``, ``-perm +6000``...): the list of programs that run as another user,
    the first step of a setuid escalation. A search of one's own tree is not."""
    roots: list[str] = []
    for a in argv[1:]:
        if a.startswith(("-", "(", "!", "\\(")) or a in ("(", "!"):
            break
        roots.append(a)
    if not any(_system_tree(r) for r in roots):
        return False
    for i, a in enumerate(argv[:-1]):
        if a == "-perm":
            mode = argv[i + 1]
            if _SETID_NUMERIC.match(mode) and mode.lstrip("-/+").lstrip("0")[:1] in "2467" \
                    and len(mode.lstrip("-/+")) >= 4:
                return True
            if _SETID_SYMBOLIC.match(mode):
                return True
    return False


_RESOLVERS = frozenset({"getent", "host", "dig", "nslookup", "drill", "resolveip", "kdig",
                        "delv", "ping", "curl", "wget"})


def _loop_refs(var: str) -> tuple[str, str]:
    return f"${var}", f"${{{var}}}"


_HASHED_LABEL = re.compile(r"[0-9a-f]{8,}|(?=(?:.*\d){3})(?=(?:.*[a-z]){3})[a-z0-9]{10,}", re.IGNORECASE)


def _name_enumeration(an: Analyzer, var: str, tokens: list[str],
                      words: list[str] | None = None) -> None:
    """A loop over a word list whose body looks up ``$WORD.parent.domain``: guessing the
    names that exist under a zone (subdomain brute force), a network map built one
    DNS query at a time. Labels that are hashes or ids (`d1a2b3c4e5f6.cdn...`, the
    content-addressed hosts of a CDN or model hub) are names the agent was given, not
    guesses: a list mostly of those is not enumeration."""
    if words and sum(1 for w in words if _HASHED_LABEL.fullmatch(w.strip("'\""))) * 2 >= len(words):
        return
    prefixes = tuple(r + "." for r in _loop_refs(var))
    for t in tokens:
        prog, _, arg = t.partition(" ")
        host = arg.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
        if prog in _RESOLVERS and host.startswith(prefixes) and host.count(".") >= 2:
            an.feature("dns_name_enumeration")
            an.acts.hosts.setdefault(host.lower())  # the zone queried (rules compare it)
            return


_LOGIN_CLIENTS = frozenset({"ssh", "sshpass", "smbclient", "ftp", "lftp", "mysql", "psql",
                            "redis-cli", "rdesktop", "xfreerdp", "telnet", "ldapsearch",
                            "evil-winrm", "rpcclient", "mongo", "mongosh"})


_CRED_OPTS = frozenset({"-p", "-P", "-l", "-u", "-U", "--user", "--username", "--password",
                        "-a", "--pass"})


def _login_guessing(an: Analyzer, var: str, commands: list[str]) -> None:
    """A loop over a word list whose values become the user or password of a remote
    login (``for u in root admin; do ssh $u@host``; ``sshpass -p $p``): online
    password guessing, whatever tool does the logging in."""
    for line in commands:
        words = line.split()
        if not words or _basename(words[0]) not in _LOGIN_CLIENTS:
            continue
        for ref in _loop_refs(var):
            for i, w in enumerate(words[1:], 1):
                if w.startswith(ref + "@") or (w == ref and words[i - 1] in _CRED_OPTS) \
                        or w in (f"-p{ref}", f"--password={ref}", f"-u{ref}", f"--user={ref}"):
                    an.feature("login_guessing")
                    return


# Interactive programs whose one-key command opens a shell (ncdu `b`, ranger `S`, nnn
# `!`): typed after `sudo PROG`, that shell is root's.
_SHELL_KEYS = {"ncdu": "b", "ranger": "S", "nnn": "!"}


def _run_parts_shell(argv: list[str]) -> list[str] | None:
    """``run-parts --regex '^sh$' /bin``: the shell (and its --arg arguments) run-parts
    would start from a bin directory; None when it runs no shell or only lists."""
    regex, args, ops = None, [], []
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in ("--list", "--test", "--help", "--version"):
            return None
        if a == "--regex" and i + 1 < len(argv):
            regex, i = argv[i + 1], i + 2
            continue
        if a.startswith("--regex="):
            regex = a.split("=", 1)[1]
        elif a.startswith(("--arg=", "-a")) and len(a) > 2:
            args.append(a.split("=", 1)[1] if a.startswith("--arg=") else a[2:])
        elif a in ("--arg", "-a") and i + 1 < len(argv):
            args.append(argv[i + 1])
            i += 1
        elif not a.startswith("-"):
            ops.append(a)
        i += 1
    if regex is None or len(ops) != 1 or ops[0].rstrip("/") not in (
            "/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin"):
        return None
    try:
        rx = re.compile(regex)
    except re.error:
        return None
    hit = next((sh for sh in sorted(SHELLS) if rx.search(sh)), None)
    return [f"{ops[0].rstrip('/')}/{hit}", *args] if hit else None


_CREDENTIAL_GLOBS = tuple(_VOCAB["credential_paths"])
_MONITOR_NAMES = _VOCAB["monitor_process_names"]
_SQL_FILE_READ = re.compile(r"(?i)\b(?:readfile|load_file|pg_read_file|pg_read_binary_file|read_text|read_blob)"
                            r"\(\s*'([^'\n]{1,300})'")
_SQL_FILE_WRITE = re.compile(r"(?i)\bwritefile\(\s*'([^'\n]{1,300})'|\binto\s+(?:out|dump)file\s+'([^'\n]{1,300})'")
_CODE_KILL = re.compile(r"\b(?:os\.kill|os\.killpg|process\.kill|Process\.kill|kill\s*\(|signal\.pidfd_send_signal)")
_CODE_MONITOR_NAME = re.compile(r"""['"]?b?['"](?:[^'"\n]*[^\w'"\n-])?(?:%s)(?:[^\w-][^'"\n]*)?['"]"""
                                % "|".join(re.escape(n) for n in sorted(_MONITOR_NAMES)))


_EDITORS = frozenset({"ed", "red", "ex", "vi", "vim", "nvim", "view", "vim.basic", "vim.tiny"})
# An editor command that saves: ed's w/wq/W (after an address), ex/vim's :w, :x, :wq,
# :update, :saveas, :wall, :xall (any case of bang, in a |-chain or on its own line).
_ED_SAVE = re.compile(r"(?m)^\s*[\d,.$;'a-z+-]*[wW][q]?(?:\s+\S+)?\s*$")
_EX_SAVE = re.compile(r"(?:^|[|\n])\s*:?\s*(?:%|\d+(?:,\d+)?)?\s*"
                      r"(?:w|wq|x|xit|exit|up|update|sav|saveas|wa|wall|wqa|wqall|xa|xall)!?(?:\s|$|\|)")


def _editor_writes(name: str, args: list[str], stdin: str | None) -> list[str]:
    """Files a line or screen editor run without a terminal saves: ``ed FILE`` fed a
    script with ``w``; ``ex``/``vim -es`` with ``-c CMD``/``+CMD`` or a script on stdin
    that writes (``:wq``, ``x``, ``:update``). An editor that only prints saves nothing."""
    files: list[str] = []
    commands: list[str] = []
    skip = False
    for i, a in enumerate(args):
        if skip:
            skip = False
        elif name in ("ed", "red"):
            skip = a == "-p"  # ed -p PROMPT
            if not a.startswith("-") or a == "-":
                files.append(a)
        elif a in ("--cmd", "-S") or re.fullmatch(r"-[a-zA-Z]*c", a):
            if a != "-S" and i + 1 < len(args):
                commands.append(args[i + 1])
            skip = True  # -c CMD, -sc CMD, -S session file
        elif a.startswith("+"):
            commands.append(a[1:])
        elif a in ("-u", "-U", "-i", "-T", "-w", "-W", "-t", "-q"):
            skip = True  # options that take a file or a name
        elif not a.startswith("-") or a == "-":
            files.append(a)
    if name in ("ed", "red"):
        saves = stdin is not None and _ED_SAVE.search(stdin) is not None
    else:
        script = "\n".join(commands) + ("\n" + stdin if stdin else "")
        saves = _EX_SAVE.search(script) is not None
    return [norm_path(f) for f in files if f != "-"] if saves else []


# An awk program that hands its input to a shell: system($0) / system($N), or the
# record printed into a pipe to a shell, or run as a command with getline.
_AWK_RUNS_INPUT = re.compile(
    r"system\s*\(\s*\$\s*(?:\d+|NF|\w+)?\s*\)|print\s*(?:\$\w*)?\s*\|\s*\"(?:/bin/|/usr/bin/)?(?:ba|da|z|k)?sh\"|"
    r"\$\d+\s*\|\s*getline")


def _awk_runs_input(argv: list[str]) -> list[str]:
    """The files an awk program runs line by line as shell commands (``awk '{system($0)}'
    notes.txt``): the same as ``sh notes.txt``."""
    code = interpreter_code("awk", argv)
    if not code or not _AWK_RUNS_INPUT.search(code[0]):
        return []
    after = argv[argv.index(code[0]) + 1:] if code[0] in argv else []
    return [norm_path(a) for a in after if a != "-" and not a.startswith("-") and "=" not in a]


def _shell_noexec(args: list[str]) -> bool:
    """A shell's options up to its script say noexec (``-n``, ``-xn``, ``-o noexec``)
    and nothing undoes it (``+n``, ``+o noexec``) or makes it interactive (``-i``
    ignores -n), and no ``-c`` line is given."""
    noexec = False
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-o", "+o") and i + 1 < len(args):
            if args[i + 1] == "noexec":
                noexec = a == "-o"
            i += 2
            continue
        if a == "--" or not a.startswith(("-", "+")) or a.startswith("--"):
            break
        letters = a[1:]
        if "c" in letters or "i" in letters or "s" in letters:
            return False
        if "n" in letters:
            noexec = a.startswith("-")
        i += 1
    return noexec


def _workspace_spellings(path: str) -> list[str]:
    """The ways a command names one workspace file (the session's cwd and HOME are
    /workspace): ``./a``, ``/workspace/a`` and ``~/a``."""
    for prefix in ("./", "/workspace/", "~/", "$HOME/"):
        if path.startswith(prefix):
            rest = path[len(prefix):]
            return [path, "./" + rest, "/workspace/" + rest, "~/" + rest]
    return [path]


def _fetches_and_runs(text: str) -> bool:
    """Shell text that fetches code and runs it (curl | sh, a download run)."""
    feats = set(Analyzer(text).run()["cmd.features"])
    return bool(feats & {"download_to_shell", "download_then_run"})


def _find_selection(argv: list[str]) -> str | None:
    """What `find ROOT ... -name PAT` (or -path PAT) selects, as one glob path: the
    path `{}` stands for in its -exec. None when find names no root, or walks a tree
    outside the workspace with no name to select by."""
    roots: list[str] = []
    for a in argv[1:]:
        if a.startswith(("-", "(", "!", ")")):
            break
        roots.append(a)
    if not roots:
        return None
    for i, a in enumerate(argv[:-1]):
        if a in ("-path", "-wholename", "-ipath", "-iwholename"):
            return argv[i + 1]
    name = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-name", "-iname")), None)
    if name is None and roots[0].startswith(("/", "~", "$")):
        return None  # every file of a system tree (`find /etc -exec grep x {} \;`): not one
    return posixpath.join(roots[0], name or "*")


def _link_pairs(name: str, args: list[str]) -> list[tuple[str, str]]:
    """The links ``ln``/``link``/``cp -s|-l`` make: (link path, target), normalised. A
    relative symlink target is relative to the link's directory (``ln -s ../a d/l``),
    a hard link's (and ``ln -r``'s) to the current directory. ``ln T DIR`` cannot be
    told from ``ln T NEWNAME`` statically: both readings are kept."""
    if name == "cp" and not any(a in ("--symbolic-link", "--link")
                                or re.fullmatch(r"-[a-zA-Z]*[sl][a-zA-Z]*", a) for a in args):
        return []
    symbolic = any(a in ("--symbolic", "--symbolic-link") or re.fullmatch(r"-[a-zA-Z]*s[a-zA-Z]*", a)
                   for a in args) and name != "link"
    relative = name == "ln" and any(a == "--relative" or re.fullmatch(r"-[a-zA-Z]*r[a-zA-Z]*", a)
                                    for a in args)
    directory: str | None = None
    ops: list[str] = []
    skip = ended = False
    for i, a in enumerate(args):
        if skip:
            skip = False
        elif ended or not a.startswith("-") or a == "-":
            ops.append(a)
        elif a == "--":
            ended = True
        elif a in ("-t", "--target-directory"):
            directory = args[i + 1] if i + 1 < len(args) else None
            skip = True
        elif a.startswith("--target-directory="):
            directory = a.split("=", 1)[1]
        elif a in ("-S", "--suffix"):
            skip = True
    pairs: list[tuple[str, str]] = []
    if directory is not None:
        pairs = [(posixpath.join(directory, _basename(t)), t) for t in ops]
    elif len(ops) == 1:
        pairs = [(_basename(ops[0]), ops[0])]
    elif len(ops) >= 2:
        pairs = [(posixpath.join(ops[-1], _basename(t)), t) for t in ops[:-1]]
        if len(ops) == 2 and not ops[1].endswith("/"):
            pairs.append((ops[1], ops[0]))
    out: list[tuple[str, str]] = []
    for link, tgt in pairs:
        if symbolic and not relative and not tgt.startswith(("/", "~", "$")):
            tgt = posixpath.join(posixpath.dirname(link), tgt)
        lp, tp = norm_path(link), norm_path(tgt)
        if lp and tp and lp != tp:
            out.append((lp, tp))
    return out


def _is_credential(path: str) -> bool:
    """A read path that is a credential store (``~`` is the workspace)."""
    for home in ("~/", "$HOME/"):
        if path.startswith(home):
            path = "/workspace/" + path[len(home):]
    return any(fnmatch.fnmatchcase(path, g) for g in _CREDENTIAL_GLOBS)


_FIND_NAME_OPTS = frozenset({"-name", "-iname", "-path", "-ipath", "-wholename", "-iwholename"})
# A name pattern that also matches ordinary files does not single out credential stores.
_ORDINARY_FILES = ("main.py", "README.md", "config", "config.json", "data.txt", "notes", "a",
                   "build.log", "setup.cfg", "index.html", "test_app.py", "Makefile", "main.c",
                   "app.js", "lib.rs", "run.sh", "data.csv", ".gitignore", "x.rc")


def _found_credentials(argv: list[str]) -> list[str]:
    """The credential stores a ``find`` selects by name under its search roots.

    `find / -name 'id_rsa*'` or `-path '*/.aws/credentials'` selects keys whatever it then
    does with them; a pattern that matches ordinary files too (`-name '*'`, `config`) does
    not. Returned as one literal instance per store, for the reads of a consumer."""
    roots: list[str] = []
    for a in argv[1:]:
        if a.startswith(("-", "(", "!", ")")):
            break
        roots.append(norm_path(a) or ".")
    roots = roots or ["./"]
    pats = [(argv[i], argv[i + 1]) for i in range(1, len(argv) - 1)
            if argv[i] in _FIND_NAME_OPTS and argv[i - 1] not in ("-not", "!")]
    hits: list[str] = []
    for opt, pat in pats:
        fold = opt.startswith("-i")
        pat_c = pat.lower() if fold else pat
        whole = opt not in ("-name", "-iname")
        # a pattern with fewer than 3 literal characters (`*c`, `*/*`) selects anything
        if len(re.sub(r"\[[^\]]*\]|[*?/]", "", pat_c if whole else pat_c.rsplit("/", 1)[-1])) < 3 \
                or any(fnmatch.fnmatchcase(
                f"/workspace/{n}" if whole else n, pat_c) for n in _ORDINARY_FILES):
            continue
        for lit in _CREDENTIAL_LITERALS:
            target = lit if whole else posixpath.basename(lit)
            if fnmatch.fnmatchcase(target.lower() if fold else target, pat_c) \
                    and any(_search_covers(r, lit) for r in roots) and lit not in hits:
                hits.append(lit)
    return hits


def _search_covers(root: str, path: str) -> bool:
    """A search from ``root`` reaches ``path`` (home and ``.`` are the workspace)."""
    r = root.rstrip("/") or "/"
    for home in ("~", "$HOME", "${HOME}", "."):
        if r == home or r.startswith(home + "/"):
            r = posixpath.normpath("/workspace" + r[len(home):])
            break
    return r == "/" or path == r or path.startswith(r + "/")


def _coproc_command(argv: list[str]) -> list[str]:
    """The command ``coproc [NAME] { cmd …; }`` / ``coproc cmd …`` runs: the optional
    name (only before a ``{``/``(`` group) and the group's braces dropped."""
    rest = argv[1:]
    if len(rest) >= 2 and re.fullmatch(r"[A-Za-z_]\w*", rest[0]) and rest[1][:1] in ("{", "("):
        rest = rest[1:]
    if rest and rest[0] in ("{", "("):
        rest = rest[1:]
    elif rest and rest[0][:1] == "(":
        rest = [rest[0][1:], *rest[1:]]
    while rest and rest[-1] in ("}", ")", ";"):
        rest = rest[:-1]
    if rest and rest[-1].endswith(")"):
        rest = [*rest[:-1], rest[-1][:-1]]
    return [a for a in rest if a]


def _locates(name: str, argv: list[str]) -> str | None:
    """The static output of a program lookup (``command -v X``, ``which X``, ``type -P
    X``): the path the program would run from, as PATH finds it (/usr/bin/X); None
    when ``argv`` is not a lookup."""
    ops = [a for a in argv[1:] if not a.startswith("-")]
    if len(ops) != 1 or "/" in ops[0] or not ops[0]:
        return None
    flags = {a for a in argv[1:] if a.startswith("-")}
    if (name == "command" and flags & {"-v", "-V"}) or (name == "which" and not flags - {"-a"}) \
            or (name == "type" and flags & {"-P", "-p"}):
        return f"/usr/bin/{ops[0]}\n"
    return None


_ROOT_USERS = frozenset({"root", "0", "#0"})
_SUDO_SHELL_FLAGS = frozenset({"-i", "-s", "--login", "--shell"})


def _requests_root_shell(name: str, argv: list[str], inner: list[str]) -> bool:
    """sudo/doas/pkexec asked for a root shell: a login or ``-s`` shell, or a shell, su
    or login run as root. In a bastion sandbox nothing can grant root (no capabilities,
    no_new_privs, one unmapped uid), so the request is only an escalation attempt;
    whether it is one outside a sandbox is for the rule to decide (session context)."""
    user = "root"
    opts = argv[1:len(argv) - len(inner)] if inner else argv[1:]
    flags: set[str] = set()
    for i, a in enumerate(opts):
        if a in ("-u", "--user") and i + 1 < len(opts):
            user = opts[i + 1]
        elif a.startswith("--user="):
            user = a.split("=", 1)[1]
        elif a.startswith("-u") and len(a) > 2:
            user = a[2:]
        elif a.startswith("--"):
            flags.add(a)
        elif a.startswith("-") and a not in ("-u",):
            flags.update(f"-{c}" for c in a[1:])
    if user not in _ROOT_USERS:
        return False
    if flags & _SUDO_SHELL_FLAGS and name in ("sudo", "doas"):
        return True
    if not inner:
        return False
    target = _basename(inner[0])
    if target in ("su", "login", "sudo", "doas"):
        return target != "su" or _su_targets_root(inner)
    return target in SHELLS


def _su_targets_root(argv: list[str]) -> bool:
    """``su``, ``su -``, ``su root -c ...``: switching to root (the default user)."""
    takes = {"-c", "--command", "-s", "--shell", "-g", "--group", "-G", "--supp-group",
             "-w", "--whitelist-environment"}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in takes:
            i += 2
            continue
        if a == "-" or a.startswith("-"):
            i += 1
            continue
        return a in _ROOT_USERS
    return True


def _serves_sensitive_root(name: str, args: list[str]) -> bool:
    """A file server whose document root is /, /etc, home... (what it serves, not how
    the program is spelled): python -m http.server -d /, php -S -t /, kubectl proxy --www=/."""
    lang = interpreter_lang(name)
    roots: list[str] = []
    if lang == "python" and any(a in ("http.server", "SimpleHTTPServer", "uploadserver",
                                      "updog") for a in args):
        for i, a in enumerate(args):
            if a in ("-d", "--directory") and i + 1 < len(args):
                roots.append(args[i + 1])
            elif a.startswith("--directory="):
                roots.append(a.split("=", 1)[1])
    elif name == "php" and "-S" in args:
        for i, a in enumerate(args):
            if a == "-t" and i + 1 < len(args):
                roots.append(args[i + 1])
    elif name == "kubectl" and "proxy" in args:
        roots += [a.split("=", 1)[1] for a in args if a.startswith("--www=")]
        roots += ["/"] if any(a.startswith("--address=0.0.0.0") for a in args) and any(
            a.startswith("--www") for a in args) else []
        if any(a.startswith("--www=/tmp") for a in args):
            roots.append("/")
    elif name in _FILE_SERVERS or name == "busybox-httpd":
        for i, a in enumerate(args):
            if a in ("-d", "--directory", "-h", "--root", "-r", "--dir") and i + 1 < len(args):
                roots.append(args[i + 1])
            elif a.startswith(("--root=", "--directory=", "--dir=")):
                roots.append(a.split("=", 1)[1])
            elif not a.startswith("-") and a.startswith(("/", "~", "$")):
                roots.append(a)
    return any(r.rstrip("/") in _SENSITIVE_ROOTS or r in ("/", "~/") for r in roots)


def _fork_bomb(text: str, kind: str, node: tree_sitter.Node, walk: Any) -> bool:
    """A function that starts itself in the background (``:(){ :|:& };:``), or a loop on
    a constant condition that only spawns background jobs: process exhaustion."""
    if kind == "function_definition":
        name_node = node.child_by_field_name("name")
        if name_node is None:
            return False
        fname = re.escape(walk.text(name_node))
        body = text.split("{", 1)[-1] if "{" in text else text
        return re.search(rf"(?:^|[\s;|&({{]){fname}\s*(?:\|\s*{fname}\s*)?&(?!&)", body) is not None
    cond = node.child_by_field_name("condition")
    body = node.child_by_field_name("body")
    if cond is None or body is None:
        return False
    if walk.text(cond).strip().rstrip(";").strip() not in ("true", ":", "[ 1 ]", "((1))", "[ true ]"):
        return False
    inner = walk.text(body)
    return re.search(r"[^&]&(?!&)\s*(?:;|\n|done)", inner) is not None and not re.search(
        r"\b(?:sleep|wait|read|timeout)\b", inner)


# Options whose value another program runs as a shell command.
_COMMAND_OPTS = frozenset({"--run-command", "--firstboot-command", "--exec-command",
                           "--command", "--run-cmd", "--post-command", "--pre-command"})
_SERVES_ROOT = re.compile(r"(?im)^\s*(?:root|alias|DocumentRoot|server\.document-root\s*=)\s+\"?"
                          r"(?:/|/etc|/root|/home)/?\"?\s*;?\s*$|dav_methods\s+PUT")
_EXEC_MODES = frozenset({f"chmod {m}" for m in ("+x", "u+x", "a+x", "ug+x", "755", "0755",
                                                  "775", "0775", "777", "0777", "700", "0700",
                                                  "750", "0750", "711", "555", "+rx", "a+rx")})
_CODE_FILE_OP = re.compile(
    r"(?:os\.(rename|replace|remove|unlink|rmdir|removedirs|makedirs|mkdir|chmod|chown|truncate)|"
    r"shutil\.(rmtree|move|copy\w*)|(?<![\w.])(open)|(?:Path|pathlib\.Path)\(\s*['\"]([^'\"]+)['\"]\s*\)\."
    r"(write_text|write_bytes|unlink|rename|replace|chmod|rmdir|mkdir|touch))"
    r"\(\s*(?:['\"]([^'\"\n]{1,300})['\"])?(?:\s*,\s*['\"]([^'\"\n]{1,300})['\"])?")


_GLOB_CHARS = frozenset("*?[")
_DEVTCP_HOST = re.compile(r"/dev/(?:tcp|udp)/([^/\s$]+)/")
# Credential stores that are one fixed path (/etc/shadow...): a glob that can expand to
# one of them reads it.
_CREDENTIAL_LITERALS = tuple(p for p in _VOCAB["credential_paths"] if not _GLOB_CHARS & set(p)) + (
    # One instance of each credential glob, so a read glob that can expand to it
    # (`tr < /proc/[0-9]*/environ`, `open(f) for f in glob('~/.[sa]*/*')`) reads it.
    "/proc/1/environ", "/proc/1/mem", "/workspace/.ssh/id_rsa", "/workspace/.ssh/id_ed25519",
    "/workspace/.aws/credentials", "/workspace/.netrc", "/workspace/.git-credentials",
    "/workspace/.kube/config", "/workspace/.docker/config.json", "/root/.ssh/id_rsa",
    "/root/.aws/credentials", "/home/user/.ssh/id_rsa", "/home/user/.aws/credentials")


def _shell_glob(pattern: str) -> re.Pattern[str] | None:
    """A shell glob as the shell expands it: ``*`` and ``?`` never cross ``/``, and at
    the start of a name they do not match a leading dot (`cat ./*` skips .netrc)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        first = i == 0 or pattern[i - 1] == "/"
        if c == "*":
            out.append("(?!\\.)[^/]*" if first else "[^/]*")
        elif c == "?":
            out.append("[^/.]" if first else "[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                body = "^" + body[1:] if body[:1] in "!^" else body
                out.append("[" + body.replace("\\", "\\\\").replace("[", "\\[") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out) + r"\Z")
    except re.error:
        return None


def _expand_credential_globs(acts: Any) -> None:
    """Add the credential files a read glob can expand to (``cat /etc/s?ad*w``;
    ``cd /etc && cat ./s?ad*w``, where the relative glob is taken from a directory the
    command names). The glob itself stays recorded as read."""
    globbed = [p for p in acts.reads if _GLOB_CHARS & set(p)]
    if not globbed:
        return
    dirs = {d.rstrip("/") or "/" for d in acts.paths if d.startswith("/")}
    dirs.add("/workspace")  # a session's commands start in the workspace, which is HOME
    for pat in globbed:
        for home in ("~/", "$HOME/", "${HOME}/"):
            if pat.startswith(home):  # HOME is the workspace in a session
                pat = "/workspace/" + pat[len(home):]
        if pat.startswith("/"):
            candidates = [pat]
        elif pat.startswith("./"):
            candidates = [posixpath.join(d, pat[2:]) for d in dirs]
        else:
            continue
        for cand in candidates:
            rx = _shell_glob(cand)
            if rx is None:
                continue
            for cred in _CREDENTIAL_LITERALS:
                if rx.match(cred):
                    acts.reads.setdefault(cred)


_CODE_PATH_READ = re.compile(r"(?:Path|pathlib\.Path|PurePath|PosixPath)\(\s*['\"]([^'\"\n]{1,300})['\"]\s*\)"
                             r"\.(?:read_text|read_bytes|open)\(")


_CODE_LITERAL_WRITE = re.compile(
    r"(?:open\(\s*(?:os\.path\.expanduser\(\s*)?['\"](?P<p1>[^'\"\n]{1,300})['\"]\s*\)?\s*,\s*['\"][wa]b?\+?['\"]\s*\)\.write|"
    r"Path\(\s*['\"](?P<p2>[^'\"\n]{1,300})['\"]\s*\)\.write_text)\(\s*"
    r"(?P<q>['\"])(?P<b>(?:\\.|(?!(?P=q)).){0,16384})(?P=q)", re.DOTALL)
_CODE_GLOB = re.compile(r"\b(?:i?glob|Path\([^)]{0,200}\)\.r?glob)\(\s*(?:os\.path\.expanduser\(\s*)?"
                        r"['\"]([~/$][^'\"\n]{0,300}[*?[][^'\"\n]{0,300})['\"]")


_CODE_PATH_LITERAL = re.compile(r"""(['"])([~$./\w{}-][^'"\s]{2,300})\1""")


_CODE_RUNS_FILE = re.compile(
    r"\b(?:exec|eval)\s*\(\s*(?:compile\s*\(\s*)?open\s*\(\s*['\"]([^'\"\n]{1,300})['\"]"
    r"|runpy\.run_path\s*\(\s*['\"]([^'\"\n]{1,300})['\"]"
    r"|spec_from_file_location\s*\([^,()]{1,200},\s*['\"]([^'\"\n]{1,300})['\"]"
    r"|\bdo\s*\(?\s*['\"]([^'\"\n]{1,300})['\"]")
_CODE_DOWNLOAD_TO = re.compile(
    r"(?:urlretrieve|getstore|mirror|download_file|DownloadFile|wget\.download)\s*\(\s*"
    r"[^,()]{1,400}(?:\([^()]{0,200}\))?[^,()]{0,100},\s*(?:filename\s*=\s*|out\s*=\s*)?"
    r"['\"]([^'\"\n]{1,300})['\"]"
    # open('x', 'wb').write(urlopen(URL).read()) / requests.get(URL).content
    r"|open\(\s*['\"]([^'\"\n]{1,300})['\"]\s*,\s*['\"][wa]b?\+?['\"]\s*\)\.write\(\s*"
    r"[\w.]{0,40}(?:urlopen|get|request|fetch)\s*\(")


_CODE_READ_CALL = re.compile(
    r"(?:\bio\.open|\bfopen|\bFile\.(?:read|open|binread|readlines)|readFileSync|createReadStream|"
    r"file_get_contents|\bIO\.(?:read|readlines|binread))\s*\(\s*['\"]([^'\"\n]{1,300})['\"]"
    r"(?:\s*,\s*['\"]([^'\"\n]{0,10})['\"])?"
    r"|\bopen\s*\(?\s*(?:my\s+)?\$?\w+\s*,\s*['\"]<['\"]\s*,\s*['\"]([^'\"\n]{1,300})['\"]"
    r"|\bopen\s*\(?\s*(?:my\s+)?\$?\w+\s*,\s*['\"]<\s*([^'\"\n<>|]{1,300})['\"]")


def _code_reads(code: str, acts: Any) -> None:
    """Files that code in other languages opens for reading with a literal path (lua
    io.open, node readFileSync/createReadStream, php file_get_contents/fopen, ruby
    File.read, perl open with '<'); a write mode is not a read."""
    if "open" not in code and "read" not in code.lower() and "file_get" not in code:
        return
    for m in _CODE_READ_CALL.finditer(code[:65536]):
        path, mode, perl3, perl2 = m.groups()
        if path and mode and any(c in mode for c in "wa+"):
            continue
        target = path or perl3 or perl2
        if target and "://" not in target:
            acts.reads.setdefault(norm_path(target.strip()))


def _code_credential_reads(code: str, acts: Any) -> None:
    """A credential store named by a string literal in code that reads files, in any
    language (perl's `open F, "<", "$ENV{HOME}/.ssh/id_rsa"`, ruby's File.read, node's
    readFileSync): the code reads it. Code that only names it (a path it checks for, a
    key it writes) does not."""
    code = fold_path_constants(code[:65536])  # path.join(os.homedir(), '.ssh', 'id_rsa')
    if "interp_file_read" not in code_features(code):
        return
    for m in _CODE_PATH_LITERAL.finditer(code):
        path = norm_path(m.group(2))
        if path and path not in acts.writes and _is_credential(path):
            acts.reads.setdefault(path)


_CODE_LINK = re.compile(
    r"""\b(?:symlink|link|symlinkSync|linkSync)\s*\(?\s*(['"])([^'"\n]{1,300})\1\s*,\s*(['"])([^'"\n]{1,300})\3"""
    r"""|Path\(\s*(['"])([^'"\n]{1,300})\5\s*\)\.(?:symlink_to|hardlink_to)\W{0,3}(?:Path\()?\s*(['"])([^'"\n]{1,300})\7""")
# A name resolved that is built from data: f"{chunk}.x.example", d + ".x.example",
# "%s.x.example" % d, "{}.x".format(d) handed to getaddrinfo/gethostbyname/dns lookups.
_DATA_LOOKUP = re.compile(
    r"(?:getaddrinfo|gethostbyname(?:_ex)?|dns\.resolver\.(?:resolve|query)|\bresolve[46]?|"
    r"dns\.lookup|Resolv\.getaddress(?:es)?|\bgethost)\s*\(\s*"
    r"(?:f['\"][^'\"\n]*\{[^}\n]+\}[^'\"\n]*\.[A-Za-z][\w-]*['\"]"
    r"|[A-Za-z_][\w\[\]:.()]*\s*\+\s*['\"]\.[\w.-]+['\"]"
    r"|[`'\"][^`'\"\n]*(?:%s|\{\}|\$\{[^}\n]+\})[^`'\"\n]*\.[A-Za-z][\w-]*[`'\"])")
_FILEINPUT_INPLACE = re.compile(r"\b(?:input|FileInput)\s*\(([^()]{0,2000}?\binplace\s*=\s*(?:True|1)\b[^()]{0,200})\)")


def _code_file_acts(code: str, acts: Any) -> None:
    """File acts of interpreter code that runs: what it renames, deletes, creates or
    writes (string-literal paths only)."""
    if "inplace" in code:
        # fileinput.input(files, inplace=True): what the loop prints replaces each file
        for m in _FILEINPUT_INPLACE.finditer(code[:65536]):
            for lit in _CODE_PATH_LITERAL.finditer(m.group(1)):
                acts.writes.setdefault(norm_path(lit.group(2)))
    if "os." not in code and "shutil" not in code and "open" not in code and "Path" not in code:
        return
    for p in python_write_paths(code[:65536]):  # p = Path('te' + 'sts') / 'x.py'; p.write_text()
        acts.writes.setdefault(norm_path(p))
    code = fold_path_constants(code[:65536])
    for m in _CODE_PATH_READ.finditer(code):
        acts.reads.setdefault(norm_path(m.group(1)))
    if "open(" in code or "read_" in code or re.search(r"\bopen\s+(?:my\s+)?\$?\w+\s*,", code):
        # glob.glob('~/.[sa]*/*') whose results are opened: the code reads what the
        # pattern expands to (credential stores included, see _expand_credential_globs)
        for m in _CODE_GLOB.finditer(code):
            acts.reads.setdefault(m.group(1))
    for m in _CODE_FILE_OP.finditer(code[:65536]):
        osop, shop, opn, ppath, pop, first, second = m.groups()
        if ppath:  # Path("x").write_text(...)
            (acts.deletes if pop in ("unlink", "rmdir", "rename", "replace") else
             acts.modes if pop == "chmod" else acts.writes).setdefault(norm_path(ppath))
            continue
        if not first:
            continue
        op = osop or shop or opn
        if op == "open":
            mode = second or ""
            if any(c in mode for c in "wax+"):
                acts.writes.setdefault(norm_path(first))
            else:
                acts.reads.setdefault(norm_path(first))
        elif op in ("rename", "replace", "move"):
            acts.deletes.setdefault(norm_path(first))
            if second:
                acts.writes.setdefault(norm_path(second))
        elif op in ("remove", "unlink", "rmdir", "removedirs", "rmtree"):
            acts.deletes.setdefault(norm_path(first))
        elif op in ("chmod", "chown"):
            acts.modes.setdefault(norm_path(first))
        elif op.startswith("copy"):
            acts.reads.setdefault(norm_path(first))
            if second:
                acts.writes.setdefault(norm_path(second))
        else:  # makedirs, mkdir, truncate
            acts.writes.setdefault(norm_path(first))


_COPIERS_TEXT = frozenset({"cp", "mv", "install", "rsync", "dd", "tee", "cat"})
# Subcommands whose output is shell set-up code (completion scripts, prompt/env hooks).
_SETUP_SUBCOMMANDS = frozenset({"completion", "completions", "init", "shellenv", "hook",
                                "--completion", "--completions", "env", "activate"})
_SED_REPLACEMENT = re.compile(r"s(.)((?:(?!\1).)*)\1((?:(?!\1).)*)\1")
def _sed_executes(args: list[str]) -> bool:
    """A GNU sed script with the `e` command or the `e` flag of `s///`: it runs commands."""
    scripts = [a for a in args if not a.startswith("-")][:1]
    scripts += [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-e", "--expression")]
    for script in scripts:
        if re.search(r"(?:^|[;\n{}])\s*(?:\d+|\$|/[^/]*/)?\s*e(?:\s|$|;)", script) or re.search(
                r"(?:^|[;\n])\s*s(.)(?:(?!\1).)*\1(?:(?!\1).)*\1[gpIiMm0-9]*e", script):
            return True
    return False


_SED_INERT_LINE = re.compile(r"^\^?(?:\\\(|\()?\s*(?:export\\?\s|alias\\?\s|#|[A-Z_]+=|PATH)")


def _sed_result(m: re.Match[str]) -> str:
    """What ``s/PATTERN/REPLACEMENT/`` leaves in a line: an edit of an environment line
    that keeps its head (back-references) stays an environment line."""
    pattern, replacement = m.group(2), m.group(3)
    if re.search(r"\\[1-9]|&", replacement) and _SED_INERT_LINE.match(pattern):
        return ""
    return replacement
_RAW_SOCKET = frozenset(_VOCAB["raw_socket_clients"]) | {"finger", "whois"}

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost",
                       "localhost.localdomain"})


def _remote_proxy(value: str) -> bool:
    """A proxy address that is not this machine (scheme, credentials and port ignored)."""
    v = value.strip().strip("'\"")
    if not v or v.startswith("$"):
        return False
    while re.match(r"^[a-zA-Z][\w+.-]*:(?=[a-zA-Z][\w+.-]*://)", v):
        v = v.split(":", 1)[1]  # httpie's "http:http://host"
    v = re.sub(r"^[a-zA-Z][\w+.-]*://", "", v)
    v = v.rsplit("@", 1)[-1]
    host = v.split("/", 1)[0]
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    host = host.lower()
    return bool(re.match(r"^[a-z0-9]", host)) and host not in _LOOPBACK and \
        not host.startswith("127.")


_HEREDOC_START = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_][\w.-]{0,63})\2")


def _pieces(text: str) -> list[str]:
    """``text`` cut at line ends into pieces of about PARSE_CHUNK characters.

    A cut never falls inside a heredoc body (up to MAX_TEXT): a long file written with
    `cat > f <<EOF` is one piece, parsed as the text it is, instead of its lines being
    parsed as commands (slow, and a false parse error). A heredoc that never ends, or a
    line longer than a chunk, is cut anyway.
    """
    if len(text) <= PARSE_CHUNK:
        return [text]
    out: list[str] = []
    start = 0
    pos = 0
    n = len(text)
    delim: str | None = None
    strip_tabs = False
    while pos < n:
        nl = text.find("\n", pos)
        end = n if nl < 0 else nl + 1
        if end - pos > PARSE_CHUNK:
            # one line longer than a chunk: cut it in chunks, as before
            if pos > start:
                out.append(text[start:pos])
            out.extend(text[i:min(i + PARSE_CHUNK, end)] for i in range(pos, end, PARSE_CHUNK))
            start = pos = end
            delim = None
            continue
        line = text[pos:end].rstrip("\n")
        if delim is None:
            m = _HEREDOC_START.search(line)
            if m:
                strip_tabs, delim = m.group(1) == "-", m.group(3)
        elif (line.lstrip("\t") if strip_tabs else line) == delim:
            delim = None
        pos = end
        size = pos - start
        if (delim is None and size >= PARSE_CHUNK) or size >= MAX_TEXT:
            out.append(text[start:pos])
            start = pos
            delim = None
    if start < n:
        out.append(text[start:])
    return out


class _Flow:
    """What has flowed into a pipeline so far, kept incrementally (pipelines can be long)."""

    __slots__ = ("count", "decoder", "downloader", "literal", "relay", "text_marks")

    def __init__(self) -> None:
        self.count = 0
        self.downloader = False
        self.decoder = False
        self.literal = True
        self.relay = True
        self.text_marks = ""

    def add(self, producer: str, stage_text: str) -> None:
        if stage_text and "$" in stage_text:
            self.text_marks = "$"
        if not producer:
            return
        self.count += 1
        self.downloader = self.downloader or producer in DOWNLOADERS or \
            producer in DNS_QUERY_TOOLS
        self.decoder = self.decoder or producer in _DECODERS
        self.literal = self.literal and producer in ("echo", "printf", "yes", "true")
        self.relay = self.relay and producer in NET_CLIENTS


class _Walk:
    """One tree walk at one decoding level."""

    def __init__(self, an: Analyzer, data: bytes, depth: int, env: dict[str, str]) -> None:
        self.an = an
        self.data = data
        self.depth = depth
        self.env = env
        self.assigning = False
        self.quoted = 0
        self.stdin_files: list[str] = []
        self.file_data_word = False  # set by substitution() when a word reads a file

    def text(self, node: tree_sitter.Node) -> str:
        return self.data[node.start_byte:node.end_byte].decode("utf-8", "replace")

    def visit(self, node: tree_sitter.Node) -> None:
        an = self.an
        an.nodes += 1
        if an.nodes > MAX_NODES:
            an.feature("oversize")
            return
        if not an.nodes & 255 and an.out_of_time():
            return
        t = node.type
        if t == "command":
            self.command(node, [])
        elif t == "redirected_statement":
            self.redirected(node)
        elif t == "pipeline":
            self.pipeline(node)
        elif t == "variable_assignment":
            self.assign(node)
        elif t in ("declaration_command", "unset_command"):
            words = [self.text(node.children[0])] if node.children else []
            for c in node.children[1:]:
                if c.type == "variable_assignment":
                    name, value = self.assign(c)
                    words.append(f"{name}={value}")
                else:
                    words.append(self.word(c))
            an.argv.setdefault(" ".join(words))
            an.add_name(words[0] if words else "export")
            if words:
                an._record(words[0], words)
        elif t in ("command_substitution", "process_substitution"):
            an.feature("command_substitution" if t == "command_substitution"
                       else "process_substitution")
            for c in node.children:
                self.visit(c)
        elif t == "comment":
            return
        elif t == "for_statement":
            # for c in $(xxd -p key | fold -w 30): $c carries file content
            var = node.child_by_field_name("variable")
            reads_before = len(an.acts.reads)
            items: list[str] = []
            for c in node.children:
                if c.type not in ("do_group", "compound_statement") and c.is_named and c is not var:
                    items.append(self.word(c))
            if var is not None and len(an.acts.reads) > reads_before:
                an.data_vars.add(self.text(var))
            # A loop over a path glob (for p in /proc/[0-9]*) binds the variable to the
            # glob, which stands for every path it expands to: `$p/environ` reads
            # /proc/[0-9]*/environ. Other loop variables stay unresolved ($p).
            name = self.text(var) if var is not None else ""
            bound = next((w for w in items if "/" in w and _GLOB_CHARS & set(w)), None)
            saved = self.env.get(name)
            if name and bound is not None and name not in an.data_vars:
                self.env[name] = bound
            args_before = len(an.args)
            argv_before = len(an.argv)
            for c in node.children:
                if c.type in ("do_group", "compound_statement"):
                    self.visit(c)
            words = len(items) if not any(" " in w or "$(" in w for w in items) else 0
            if name and bound is None and words >= 3:
                if words >= 4:
                    _name_enumeration(an, name, list(an.args)[args_before:], items)
                _login_guessing(an, name, list(an.argv)[argv_before:])
            if name in self.env and saved is None:
                del self.env[name]
            elif saved is not None:
                self.env[name] = saved
        elif t in ("function_definition", "while_statement"):
            if _fork_bomb(self.text(node), t, node, self):
                an.feature("fork_bomb")
            for c in node.children:
                self.visit(c)
        elif t == "command_name":
            an.simple([self.word(node)], self.depth, dict(self.env))
        elif t == "ERROR":
            an.parse_error = True
            for c in node.children:
                self.visit(c)
        else:
            if t in ("&",) and node.parent is not None:
                an.feature("background")
            for c in node.children:
                self.visit(c)

    # ------------------------------------------------------------ words

    def word(self, node: tree_sitter.Node) -> str:
        t = node.type
        if t == "word" or t == "command_name":
            if t == "command_name" and node.child_count:
                return "".join(self.word(c) for c in node.children)
            return unescape_bare(self.text(node))
        if t == "raw_string":
            return self.text(node)[1:-1]
        if t == "ansi_c_string":
            self.an.feature("ansi_c_string")
            return ansi_c(self.text(node)[2:-1])
        if t in ("string", "translated_string"):
            self.quoted += 1
            try:
                return self.joined(node, quoted=True)
            finally:
                self.quoted -= 1
        if t == "concatenation":
            return self.joined(node, quoted=False)
        if t == "simple_expansion":
            if self.text(node)[1:] in self.an.data_vars:
                self.file_data_word = True
            return self.var(self.text(node)[1:], self.text(node))
        if t == "expansion":
            return self.expansion(node)
        if t == "command_substitution":
            return self.substitution(node)
        if t == "process_substitution":
            self.an.feature("process_substitution")
            for c in node.children:
                self.visit(c)
            return self.text(node)
        if t == "string_content":
            return unescape_double(self.text(node))
        return self.text(node)

    def joined(self, node: tree_sitter.Node, quoted: bool) -> str:
        out: list[str] = []
        pos = node.start_byte + (1 if quoted and self.text(node)[:1] in "\"" else 0)
        end = node.end_byte - (1 if quoted and self.text(node)[-1:] == '"' else 0)
        for c in node.children:
            if c.type == '"' or (c.type == "$" and quoted):
                pos = max(pos, c.end_byte)
                continue
            if c.start_byte > pos:
                gap = self.data[pos:c.start_byte].decode("utf-8", "replace")
                out.append(unescape_double(gap) if quoted else unescape_bare(gap))
            out.append(self.word(c))
            pos = c.end_byte
        if end > pos:
            gap = self.data[pos:end].decode("utf-8", "replace")
            out.append(unescape_double(gap) if quoted else unescape_bare(gap))
        return "".join(out)

    def var(self, name: str, original: str) -> str:
        if name == "IFS" and (self.assigning or self.quoted):
            return original
        if name == "IFS":
            self.an.feature("ifs_obfuscation")
            return " "
        value = self.env.get(name)
        if value is None:
            return original
        self.an.feature("variable_resolved")
        return value

    def expansion(self, node: tree_sitter.Node) -> str:
        body = self.text(node)[2:-1]
        m = re.fullmatch(r"(\w+)(?::(-?\d+)(?::(-?\d+))?)?", body)
        if m:
            name = m.group(1)
            if name == "IFS" and (self.assigning or self.quoted):
                return self.text(node)
            if name == "IFS":
                self.an.feature("ifs_obfuscation")
                return " "
            value = self.env.get(name)
            if value is None:
                return self.text(node)
            self.an.feature("variable_resolved")
            if m.group(2) is not None:
                start = int(m.group(2))
                value = value[start:] if m.group(3) is None else value[start:start + int(m.group(3))]
            return value
        if body.startswith("IFS"):
            self.an.feature("ifs_obfuscation")
            return " "
        for c in node.children:
            if c.type in ("command_substitution", "process_substitution"):
                self.visit(c)
        return self.text(node)

    def substitution(self, node: tree_sitter.Node) -> str:
        """``$(...)``: walk it; if its output is static (echo/base64 -d), use it."""
        self.an.feature("command_substitution")
        inner = [c for c in node.children if c.is_named]
        out: str | None = None
        reads_before = len(self.an.acts.reads)
        if len(inner) == 1 and inner[0].type == "file_redirect":
            # $(<file): the file's content
            named = [c for c in inner[0].children if c.is_named]
            if named:
                self.an.acts.reads.setdefault(norm_path(self.word(named[-1])))
        for c in inner:
            if c.type == "pipeline":
                out = self.pipeline(c)
            elif c.type == "command":
                out = self.command(c, [])
            elif c.type == "redirected_statement":
                out = self.redirected(c)
            else:
                self.visit(c)
                out = None
        if len(self.an.acts.reads) > reads_before:
            self.file_data_word = True  # this word carries a file's content
        if out is not None and len(inner) == 1:
            return out.rstrip("\n")
        return self.text(node)

    # ------------------------------------------------------------ statements

    def assign(self, node: tree_sitter.Node) -> tuple[str, str]:
        name_node = node.child_by_field_name("name") or (node.children[0] if node.children else None)
        name = self.text(name_node) if name_node is not None else ""
        value_node = node.child_by_field_name("value")
        if value_node is None and node.child_count >= 3:
            value_node = node.children[2]
        self.assigning = True
        reads_before = len(self.an.acts.reads)
        data_before = self.file_data_word
        self.file_data_word = False
        try:
            value = self.word(value_node) if value_node is not None else ""
        finally:
            self.assigning = False
        if name and (len(self.an.acts.reads) > reads_before or self.file_data_word):
            self.an.data_vars.add(name)  # d=$(base64 -w0 key): $d carries file content
        self.file_data_word = data_before
        if name:
            self.env[name] = value
            self.an.argv.setdefault(f"{name}={value}")
            self.an.assignment(name, value)
        return name, value

    def command(self, node: tree_sitter.Node, redirects: list[tree_sitter.Node],
                stdin: str | None = None) -> str | None:
        argv: list[str] = []
        prefix: list[str] = []
        file_data_names: list[str] = []
        local_env = dict(self.env)
        for c in node.children:
            t = c.type
            if t == "variable_assignment":
                name, value = self.assign(c)
                prefix.append(f"{name}={value}")
                local_env[name] = value
                if name in ("GIT_SSH_COMMAND", "GIT_SSH", "RSYNC_RSH", "PAGER", "EDITOR",
                            "VISUAL", "GIT_PAGER", "SYSTEMD_PAGER", "MANPAGER") and value:
                    self.an.analyse_text(value, self.depth + 1, self.env, "env_command")
            elif t in ("file_redirect", "heredoc_redirect", "herestring_redirect"):
                redirects = [*redirects, c]
            elif t == "comment":
                continue
            elif c.is_named:
                self.file_data_word = False
                w = self.word(c)
                if self.file_data_word and argv:
                    file_data_names.append(_basename(argv[0]))
                if c.type in ("word", "concatenation", "command_name", "simple_expansion",
                              "expansion") and ("$" in self.text(c) or "\\" in self.text(c)
                                                or "''" in self.text(c) or '""' in self.text(c)):
                    if not argv and "$" not in w and w.strip() and w != self.text(c):
                        self.an.feature("obfuscated_name")
                    if " " in w and self.unquoted_expansion(c):
                        argv.extend(w.split())
                        continue
                argv.append(w)
        for p in prefix:
            self.an.argv.setdefault(p)
        then: list[tree_sitter.Node] = []
        self.stdin_files = []
        code_mark = len(self.an.pending_code)
        self.an.acts.recent = []
        stdin = self.apply_redirects(redirects, stdin, then)
        if not argv:
            return None
        if argv[0] in (".", "source") and argv[1:2] in (["/dev/stdin"], ["/dev/fd/0"], ["/proc/self/fd/0"]):
            argv = ["sh", *argv[2:]]  # `. /dev/stdin <<< "$(curl ...)"`: the shell runs its stdin
        sink = _basename(argv[0])
        if sink in _WRAPPERS:  # `timeout 5 nc host 80 < file`: the wrapped program reads it
            inner = argv
            while inner and _basename(inner[0]) in _WRAPPERS:
                inner = self.an._unwrap(_basename(inner[0]), inner)
            sink = _basename(inner[0]) if inner else sink
        for prog in file_data_names:
            # A file's content handed to a program as an argument (dig $(base64 f).x)
            self.an.args.setdefault(f"{prog} <file-data>")
            self.an.run_args.setdefault(f"{prog} <file-data>")
        if sink == "ssh" and self.stdin_files:
            self.an.last_ssh_remote = ""
            out = self.an.simple(argv, self.depth, local_env, stdin)
            if self.an.last_ssh_remote and _REMOTE_STORE.search(self.an.last_ssh_remote):
                self.an.feature("pipe_to_remote_store")
            return out
        elif self.stdin_files and sink in NET_CLIENTS | MAILERS and sink not in ("curl", "wget"):
            if sink != "openssl" or "s_client" in argv:
                self.an.feature("file_to_network" if sink not in MAILERS else "pipe_to_mail")
        if argv[0] in ("export", "declare", "local", "readonly", "typeset"):
            for a in argv[1:]:
                if "=" in a:
                    k, _, v = a.partition("=")
                    self.env[k] = v
        writes = any(r.type == "file_redirect" and re.match(r"^\d?>", self.text(r).lstrip("0123456789"))
                     for r in redirects) or any(c.type == "file_redirect" for r in redirects
                                                 if r.type == "heredoc_redirect" for c in r.children)
        self.an.stdin_paths = list(self.stdin_files)  # `curl -K - < cfg` (clientconf)
        out = self.an.simple(argv, self.depth, local_env, stdin)
        real = self.an.aliases.get(sink, sink)
        if self.an.acts.recent:
            if real in DOWNLOADERS:
                self.an.downloaded.update(dict.fromkeys(self.an.acts.recent))
            if real in _RAW_SOCKET and not (real == "openssl" and "s_client" not in argv):
                self.an.feature("raw_socket_to_file")
        self.pair_written(code_mark, out if out is not None else stdin, argv)
        produced = out if out is not None else stdin
        if writes and produced and _SHELL_REF.search(produced):
            self.an.shell_payload_written = True
        if _basename(argv[0]) in ("cp", "ln", "install") and any(
                re.fullmatch(r"(?:/usr)?/bin/(?:ba|da|z)?sh", a) for a in argv[1:]):
            self.an.shell_payload_written = True
        for rest in then:
            out = self.pipeline(rest, initial=out, producers=[_basename(argv[0])])
        return out

    def pair_written(self, code_mark: int, produced: str | None,
                     argv: list[str] | None = None) -> None:
        """Text this command wrote to files: its heredoc/printed text, by destination.

        Unknown content is None, except where the writer says what it is: touch and
        mkdir write nothing; a tool's completion/init/shellenv output is shell set-up;
        sed -i writes its replacement text; a symlink's content is another file's."""
        an = self.an
        targets = an.acts.recent
        if not targets:
            return
        texts = an.pending_code[code_mark:]
        if produced and produced not in texts:
            # what this command itself output (a decoder's plain text: `echo B64 |
            # base64 -d >> ~/.bash_aliases` writes the decoded lines)
            texts = [*texts, produced]
        if not texts and argv:
            prog = _basename(argv[0])
            if prog in ("touch", "truncate", "mkdir", "ln") or (
                    prog not in _COPIERS_TEXT and any(a in _SETUP_SUBCOMMANDS for a in argv[1:4])):
                texts = [""]
            elif prog in ("sed", "perl"):
                texts = [_sed_result(m) for a in argv[1:] for m in _SED_REPLACEMENT.finditer(a)]
                texts = texts or [None]
                an.edited.update(targets)
        for target in dict.fromkeys(targets):
            an.written.setdefault(target, []).extend(texts or [None])  # type: ignore[list-item]
        an.acts.recent = []

    def unquoted_expansion(self, node: tree_sitter.Node) -> bool:
        """Bash word-splits the result of an unquoted expansion ($a, ${IFS}, $(...))."""
        if node.type in ("simple_expansion", "expansion", "command_substitution"):
            return True
        if node.type in ("concatenation", "command_name"):
            kinds = {c.type for c in node.children}
            return bool(kinds & {"simple_expansion", "expansion", "command_substitution",
                                 "concatenation"}) and not kinds & {"string", "raw_string",
                                                                    "ansi_c_string"}
        return False

    def apply_redirects(self, redirects: list[tree_sitter.Node], stdin: str | None,
                        then: list[tree_sitter.Node] | None = None) -> str | None:
        """Record redirections; return what the command reads on stdin (heredoc/here-string).

        A heredoc may carry the rest of a pipeline (``cat <<EOF | sh``); those pipeline
        nodes are appended to ``then`` for the caller to feed with the command's output.
        """
        an = self.an
        for r in redirects:
            if r.type == "file_redirect":
                dest = r.child_by_field_name("destination")
                named = [c for c in r.children if c.is_named and c.type != "file_descriptor"
                         and c.type != "ERROR"]
                if dest is None and named:
                    dest = named[-1]
                target = self.word(dest) if dest is not None else ""
                op = self.data[r.start_byte:dest.start_byte if dest is not None
                               else r.end_byte].decode("utf-8", "replace").strip()
                an.redirects.setdefault(f"{op} {target}".strip())
                if (_WRITE_OP.fullmatch(op) and target and not target.isdigit()
                        and target != "-" and not target.startswith(("/dev/", "&"))):
                    an.acts.write(norm_path(target))
                    (an.appended if ">>" in op else an.truncated).add(norm_path(target))
                elif op.endswith("<") and not op.endswith("<<") and target:
                    an.acts.paths.setdefault(norm_path(target))
                    an.acts.reads.setdefault(norm_path(target))
                if target.startswith(("/dev/tcp/", "/dev/udp/")):
                    an.feature("devtcp")
                if op.endswith("<") and not op.endswith("<<") and target != "/dev/null":
                    self.stdin_files.append(target)
            elif r.type == "heredoc_redirect":
                an.feature("heredoc")
                body = ""
                for c in r.children:
                    if c.type == "heredoc_body":
                        body = self.text(c)
                    elif c.type == "file_redirect":
                        self.apply_redirects([c], None)
                    elif c.type == "pipeline" and then is not None:
                        then.append(c)
                    elif c.type in ("command_substitution",):
                        self.visit(c)
                an.extra_text.append(body)
                an.pending_code.append(body)
                stdin = body
            elif r.type == "herestring_redirect":
                an.feature("herestring")
                named = [c for c in r.children if c.is_named]
                body = self.word(named[-1]) if named else ""
                an.extra_text.append(body)
                stdin = body
        return stdin

    def redirected(self, node: tree_sitter.Node, stdin: str | None = None) -> str | None:
        body = node.child_by_field_name("body") or (node.children[0] if node.children else None)
        redirects = [c for c in node.children if c is not body and c.type in
                     ("file_redirect", "heredoc_redirect", "herestring_redirect")]
        while body is not None and body.type == "list":
            # tree-sitter reads `a > x && b >> x` as `(a > x && b) >> x`; in bash the
            # trailing redirection is b's alone: a runs as it is, b gets the redirection
            parts = [c for c in body.children if c.is_named]
            if not parts:
                break
            for c in parts[:-1]:
                self.visit(c)
            body = parts[-1]
        if body is not None and body.type == "redirected_statement":
            inner = body.child_by_field_name("body") or (body.children[0] if body.children else None)
            if inner is not None and inner.type == "command":
                more = [c for c in body.children if c is not inner and c.type in
                        ("file_redirect", "heredoc_redirect", "herestring_redirect")]
                return self.command(inner, [*more, *redirects], stdin)
        if body is not None and body.type == "command":
            return self.command(body, redirects, stdin)
        # A redirection of a compound statement (`{ a; b; } > f`, `a && b > f` as bash
        # parses it): what its commands print goes to the target.
        code_mark = len(self.an.pending_code)
        produced = None
        if body is not None and body.type == "pipeline":
            # `echo B64 | base64 -d >> f`: what reaches f is the last stage's output
            produced = self.pipeline(body)
        elif body is not None:
            self.visit(body)
        self.an.acts.recent = []
        self.apply_redirects(redirects, stdin)
        self.pair_written(code_mark, produced)
        return None

    def pipeline(self, node: tree_sitter.Node, initial: str | None = None,
                 producers: list[str] | None = None) -> str | None:
        an = self.an
        stages = [c for c in node.children if c.is_named]
        out: str | None = initial
        flow = _Flow()
        for p in producers or ():
            flow.add(p, "")
        offset = 1 if producers else 0
        nc_mark = len(an.nc_modes)
        found: list[str] = []  # credential stores an earlier stage's find names
        for j, st in enumerate(stages):
            i = j + offset
            before = len(an.names_log)
            if st.type == "command":
                result = self.command(st, [], out if i else None)
            elif st.type == "redirected_statement":
                result = self.redirected(st, out if i else None)
            else:
                self.visit(st)
                result = None
            names = an.names_log[before:]
            stage_name = self.stage_name(st)
            if found and "xargs" in names and any(n in FILE_READERS for n in names):
                for path in found:  # find -name id_rsa* | xargs cat: the keys are read
                    an.acts.reads.setdefault(path)
            if an.found_creds:
                found, an.found_creds = an.found_creds, []
            if i > 0 and stage_name is not None:
                lang = interpreter_lang(stage_name)
                if stage_name in SHELLS and not self.has_c_flag(st):
                    an.feature("pipe_to_shell")
                    if flow.downloader:
                        an.feature("download_to_shell")
                    if flow.decoder:
                        an.feature("decoded_to_shell")
                elif lang is not None and lang not in ("awk",) and not self.has_code(st, lang):
                    an.feature("pipe_to_interpreter")
                    if flow.downloader:
                        an.feature("download_to_shell")
                    if flow.decoder:
                        an.feature("decoded_to_shell")
                if flow.count:
                    self.data_sink(st, stage_name, flow)
            modes = an.nc_modes[nc_mark:]
            if "listen" in modes and "connect" in modes:
                an.feature("nc_relay")  # one netcat listens, one dials out: a forwarder
            for p in names or ([stage_name] if stage_name else []):
                flow.add(p, "")
            flow.add("", self.text(st) if "$" not in flow.text_marks else "")
            out = result
        return out

    def data_sink(self, st: tree_sitter.Node, sink: str, flow: _Flow) -> None:
        """Local data piped into a network client or mailer (exfiltration shapes).

        A producer that only prints literals (``echo GET / | nc host 80``) or a listener
        (``nc -l | nc host``, a relay) is not local data; anything that reads files, runs
        programs or substitutes command output is.
        """
        if (flow.literal and "$" not in flow.text_marks) or flow.relay:
            return
        text = self.text(st)
        clientconf.piped_arguments(self.an, sink, text)  # `... key | xargs -I{} curl -H "X: {}"`
        if sink == "ssh":
            if self.an.last_ssh_remote and _REMOTE_STORE.search(self.an.last_ssh_remote):
                self.an.feature("pipe_to_remote_store")
        elif sink == "openssl":
            if "s_client" in text:
                self.an.feature("pipe_to_network")
        elif sink in ("curl", "curlie", "wget") and re.search(
                r"(?:^|\s)(?:-[dFT]|--data(?:-binary|-raw|-urlencode)?|--form|--upload-file|"
                r"--json|--post-file)[= ]?\s*['\"]?(?:[\w.-]+=)?@?-(?:\s|$|['\"])", text):
            self.an.feature("pipe_to_network")  # local data piped into an upload
        elif sink in NET_CLIENTS and sink not in ("curl", "wget"):
            self.an.feature("pipe_to_network")
        elif sink in MAILERS:
            self.an.feature("pipe_to_mail")

    def stage_name(self, node: tree_sitter.Node) -> str | None:
        if node.type == "redirected_statement":
            body = node.child_by_field_name("body") or (node.children[0] if node.children else None)
            return self.stage_name(body) if body is not None else None
        if node.type != "command":
            return None
        words = [c for c in node.children if c.is_named and c.type not in
                 ("variable_assignment", "file_redirect", "heredoc_redirect",
                  "herestring_redirect", "comment")]
        argv = [self.word(c) for c in words]
        while argv and _basename(argv[0]) in _WRAPPERS:
            argv = self.an._unwrap(_basename(argv[0]), argv)
        if argv and _basename(argv[0]) == "busybox":
            argv = argv[1:]
        if not argv:
            return None
        name = _basename(argv[0])
        return self.an.aliases.get(name, name)  # a renamed copy is what it copies

    def has_c_flag(self, node: tree_sitter.Node) -> bool:
        txt = self.text(node)
        return re.search(r"\s-[a-z]*c\b", txt) is not None

    def has_code(self, node: tree_sitter.Node, lang: str) -> bool:
        txt = self.text(node)
        return re.search(r"\s-(?:c|e|E|r|m|-eval)", txt) is not None or (
            re.search(r"\s[^-\s][^\s]*\.(?:py|pl|rb|js|php|lua)\b", txt) is not None)


def analyze_command(cmd: str, memory: CallMemory | None = None) -> dict[str, Any]:
    """Every ``cmd.*`` field for one submitted command. Never raises on bad input.
    ``memory`` (one per session) carries what earlier calls fetched (see CallMemory)."""
    if not isinstance(cmd, str):
        cmd = str(cmd)
    an = Analyzer(cmd, memory)
    try:
        return an.run()
    except RecursionError:
        an.parse_error = True
        an.feature("parse_error")
        an.feature("too_deep")
        return {**_fallback(cmd), "cmd.features": list(an.features)}


def analyze_argv(argv: Sequence[str], memory: CallMemory | None = None) -> dict[str, Any]:
    """Every ``cmd.*`` field for a call given as an argv list (run without a shell).

    The arguments are not joined and re-parsed as one shell line: a 1 MiB list of data
    arguments is data, while code handed to an interpreter or a shell in the list
    (``["python3", "-c", SCRIPT]``, ``["sh", "-c", LINE]``) is analysed as code, within
    the same budgets as a command line. ``cmd.raw`` is the list quoted for a shell."""
    args = [a if isinstance(a, str) else str(a) for a in argv]
    raw = shlex.join(args)
    if not args:
        return analyze_command(raw, memory)
    an = Analyzer(raw, memory)
    # Scanning code costs ~0.5 µs a character per feature: an argv's long script (a
    # 128 KiB `python3 -c`, no shell parse involved) gets time in proportion, still
    # bounded (MAX_EXTRA_TIME).
    an.deadline += min(MAX_EXTRA_TIME, TIME_PER_CHAR * len(raw))
    try:
        return an.run(args)
    except RecursionError:
        an.parse_error = True
        an.feature("parse_error")
        an.feature("too_deep")
        return {**_fallback(raw), "cmd.features": list(an.features)}


def _fallback(cmd: str) -> dict[str, Any]:
    return {
        "cmd.raw": cmd, "cmd.names": [], "cmd.argv": [], "cmd.text": cmd,
        "cmd.redirects": [], "cmd.payloads": [], "cmd.interp_code": [],
        "cmd.features": ["parse_error"], "cmd.parse_error": True, "cmd.depth": 0,
        "cmd.urls": [], "cmd.sudo_names": [], "cmd.exec_names": [],
    }
