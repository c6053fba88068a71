"""Network clients judged with the configuration they will actually use.

curl, wget and git take what they send from configuration as well as from their command
line: ``curl -K sync.cfg`` whose ``upload-file = ~/.ssh/id_ed25519`` uploads the key with
no upload flag in sight; a ``~/.curlrc`` written by an earlier call turns every later
plain ``curl URL`` into a POST of ``~/.aws/credentials``; ``git -c http.extraHeader=``
(or the same key in ``.git/config``, ``~/.gitconfig``, ``GIT_CONFIG_*``) puts whatever
the value holds into every HTTP request git makes. So the analyser reads those files the
way the client does and judges the *effective* request:

* **curl**: ``-K/--config FILE`` (``-K -``: standard input, when it is a heredoc, a
  here-string or a file), nested ``config`` lines, and the default ``.curlrc``
  (``$CURL_HOME``, ``$XDG_CONFIG_HOME``, ``$HOME``; not when ``-q``/``--disable`` comes
  first), parsed with curl's config syntax (``opt = value``, ``opt value``, ``--opt
  value``, ``"quoted \\"values\\""``, unique long-option prefixes). Their options are
  merged into the argv the analyser records, so every existing judgement (upload of a
  credential, remote proxy, hosts) applies;
* **wget**: ``-e CMD``, ``--config FILE``, ``$WGETRC`` or ``~/.wgetrc`` (not with
  ``--no-config``), wgetrc commands mapped to their options;
* **git**: the request-carrying keys (``http[.<url>].extraHeader``, remote URLs,
  ``url.<base>.insteadOf``) from ``-c``, ``--config-env``, ``GIT_CONFIG_COUNT/KEY/VALUE``,
  ``GIT_CONFIG_PARAMETERS`` and the config files git reads (``.git/config``,
  ``~/.gitconfig``, ``$XDG_CONFIG_HOME/git/config``, ``$GIT_CONFIG_GLOBAL``).

A file's text is what this command wrote to it, else the file as it is on disk now
(``CallMemory.files``, the session's reader of the sandbox's writable trees), else what
an earlier call wrote to it (``CallMemory.scripts``).

Two facts come out (rules in packs/exfil.yaml):

* ``client_secret_request``: the request the client will make carries a credential's
  content (a credential store, or a copy an earlier call made of one, as the upload, the
  body, a form file, a header file, a URL list; or a header/URL setting whose value is a
  command substitution in a command that reads a credential, or literal key material) to
  a host that is not this machine. A token the task's environment provides
  (``Authorization: Bearer $GITHUB_TOKEN``) is not content read from a credential store:
  it is the task's own grant, used the way it was given, and is not judged here;
* ``client_config_secret_written``: a client configuration that later requests will use
  (``.curlrc``, ``.wgetrc``, a git config) is written so that it sends a credential:
  judged when written, since the request may come in another call.

Not covered: a config handed over a pipe whose writer is not known text
(``cmd | curl -K -``), ``-K <(...)`` process substitution, curl ``--variable`` expansion
of environment variables, and system-wide files (``/etc/wgetrc``, ``/etc/gitconfig``),
which the sandbox cannot write.
"""

from __future__ import annotations

import fnmatch
import itertools
import posixpath
import re
import shlex
from typing import Any

from ..rules.vocabulary import vocabulary
from .acts import hosts_in, norm_path
from .gitconfig import git_config_entries
from .sandboxfs import UNREADABLE

__all__ = ["CLIENTS", "client_argv", "curl_config_args", "file_text", "git_config_entries",
           "judge_written", "piped_arguments", "wgetrc_args"]

CLIENTS = frozenset({"curl", "wget", "git"})
_HOME = "/workspace"  # a session's HOME and working directory
_MAX_NEST = 4
_CREDENTIALS = tuple(vocabulary()["credential_paths"])
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost",
                       "localhost.localdomain", "[::1]"})
# Literal key material in a setting: PEM/OpenSSH private keys (also base64 of their
# armour), AWS access key ids and secret keys.
_SECRET_TEXT = re.compile(r"PRIVATE KEY-----|LS0tLS1CRUdJTi|b3BlbnNzaC1rZXktdjE|"
                          r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|aws_secret_access_key")
_SUBSTITUTION = re.compile(r"\$\(|`")

# ------------------------------------------------------------------ curl

# Long options that take a value (the ones whose value matters here, and the common
# ones, so that a value is never read as a URL operand).
_CURL_VALUE_LONG = frozenset({
    "upload-file", "data", "data-ascii", "data-binary", "data-raw", "data-urlencode",
    "json", "form", "form-string", "header", "proxy-header", "config", "url", "output",
    "proxy", "preproxy", "socks4", "socks4a", "socks5", "socks5-hostname", "user",
    "proxy-user", "cookie", "cookie-jar", "referer", "user-agent", "request", "max-time",
    "connect-timeout", "retry", "retry-delay", "retry-max-time", "write-out", "cacert",
    "capath", "cert", "key", "range", "resolve", "connect-to", "variable", "url-query",
    "output-dir", "dump-header", "trace", "trace-ascii", "stderr", "limit-rate",
    "max-filesize", "interface", "local-port", "oauth2-bearer", "netrc-file",
    "cert-type", "key-type", "ciphers", "doh-url", "dns-servers", "noproxy", "expand-url"})
_CURL_VALUE_SHORT = frozenset("TdFHKoxuberAXmwEcCYyzPQtU")
_CURL_BODY = frozenset({"-d", "--data", "--data-ascii", "--data-binary", "--json",
                        "--data-urlencode", "--url-query", "--variable"})
_CURL_FORM = frozenset({"-F", "--form"})
_CURL_UPLOAD = frozenset({"-T", "--upload-file"})
_CURL_HEADER = frozenset({"-H", "--header", "--proxy-header"})


def _unslashquote(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text) and text[i] != '"':
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"t": "\t", "n": "\n", "r": "\r", "v": "\v"}.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _curl_long(name: str) -> str:
    """A long option name as curl resolves it: exact, else a unique prefix of one."""
    if name in _CURL_VALUE_LONG:
        return name
    hits = [o for o in _CURL_VALUE_LONG if o.startswith(name)]
    return hits[0] if len(hits) == 1 and len(name) >= 3 else name


def curl_config_args(text: str) -> list[str]:
    """The argv a curl config file stands for (curl's tool_parsecfg rules)."""
    out: list[str] = []
    for raw in text.splitlines()[:4096]:
        line = raw.lstrip()
        if not line or line[0] in "#/*\r":
            continue
        dashed = line.startswith("-")
        i = 0
        while i < len(line) and not line[i].isspace() and (dashed or line[i] not in "=:"):
            i += 1
        option, rest = line[:i], line[i:]
        j = 0
        while j < len(rest) and (rest[j].isspace() or (not dashed and rest[j] in "=:")):
            j += 1
        rest = rest[j:]
        if rest.startswith('"'):
            param: str | None = _unslashquote(rest[1:])
        else:
            param = rest.split(None, 1)[0] if rest.split() else None
        if option.startswith("--"):
            name = option[2:]
        elif option.startswith("-"):
            out.extend([option, param] if param is not None else [option])
            continue
        else:
            name = option
        name = _curl_long(name)
        if name in _CURL_VALUE_LONG:
            out.extend([f"--{name}", param] if param is not None else [f"--{name}"])
        else:
            out.append(f"--{name}={param}" if param else f"--{name}")
    return out


def _curl_sources(args: list[str]) -> tuple[list[str], list[str]]:
    """(files whose content curl sends, request destinations) from an effective argv."""
    files: list[str] = []
    dests: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        key, value = a, None
        if a.startswith("--"):
            key, eq, v = a.partition("=")
            value = v if eq else None
        elif a.startswith("-") and len(a) > 2:
            # a short cluster: -sT FILE, -d@file, -H@file
            for k, ch in enumerate(a[1:], 1):
                if ch in _CURL_VALUE_SHORT:
                    key, value = "-" + ch, a[k + 1:] or None
                    break
        takes = key in _CURL_BODY | _CURL_FORM | _CURL_UPLOAD | _CURL_HEADER or (
            key.startswith("--") and key[2:] in _CURL_VALUE_LONG) or (
            len(key) == 2 and key[1:] in _CURL_VALUE_SHORT)
        if takes and value is None:
            value = args[i + 1] if i + 1 < len(args) else ""
            i += 1
        i += 1
        if not a.startswith("-") or a == "-":
            dests.append(a)
            continue
        if value is None:
            continue
        if key == "--url":
            dests.append(value)
        elif key in _CURL_UPLOAD:
            if value not in ("-", ".", ""):
                files.append(value)
        elif key in _CURL_BODY:
            m = re.match(r"^(?:[^@=]*)@(.+)$", value)
            if m and m.group(1) != "-":
                files.append(m.group(1).split(";", 1)[0])
        elif key in _CURL_FORM:
            for m in re.finditer(r"=[@<]([^;,]+)", value):
                if m.group(1) != "-":
                    files.append(m.group(1))
        elif key in _CURL_HEADER and value.startswith("@") and value[1:] not in ("-", ""):
            files.append(value[1:])
    return files, dests


def _curl_argv(an: Any, argv: list[str], env: dict[str, str], stdin: str | None) -> list[str]:
    args = argv[1:]
    merged: list[str] = []
    if not (args[:1] and args[0] in ("-q", "--disable")):
        for path in _curlrc_paths(env):
            text = file_text(an, path)
            if text:
                merged.extend(_curl_nested(an, curl_config_args(text), stdin, 1))
    merged.extend(_curl_nested(an, args, stdin, 0))
    return [argv[0], *merged]


def _curl_nested(an: Any, args: list[str], stdin: str | None, depth: int) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        out.append(a)
        path = None
        if a in ("-K", "--config") and i + 1 < len(args):
            path = args[i + 1]
            out.append(path)
            i += 1
        elif a in ("-K", "--config"):
            path = "-"  # `curl -K - <<EOF`: the parser drops a lone `-` before a heredoc
            out.append(path)
        elif a.startswith("-K") and len(a) > 2 and not a.startswith("--"):
            path = a[2:]
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif re.fullmatch(r"-[a-zA-Z]+K", a) and i + 1 < len(args):
            path = args[i + 1]
            out.append(path)
            i += 1
        i += 1
        if path is None or depth >= _MAX_NEST:
            continue
        text = _stdin_text(an, stdin) if path in ("-", "/dev/stdin", "/dev/fd/0") \
            else file_text(an, path)
        if text:
            out.extend(_curl_nested(an, curl_config_args(text), stdin, depth + 1))
    return out


def _curlrc_paths(env: dict[str, str]) -> list[str]:
    homes: list[str] = []
    for var, names in (("CURL_HOME", (".curlrc", "_curlrc")),
                       ("XDG_CONFIG_HOME", (".curlrc", "curlrc")),
                       ("HOME", (".curlrc", "_curlrc"))):
        base = _literal_dir(env.get(var))
        if var == "HOME" and base is None:
            base = _HOME
        if base is not None:
            homes.extend(posixpath.join(base, n) for n in names)
    return list(dict.fromkeys(homes))


def _literal_dir(value: str | None) -> str | None:
    if not value or "$" in value or "`" in value:
        return None
    return value.rstrip("/") or "/"


# ------------------------------------------------------------------ wget

_WGET_OPTS = {"postfile": "--post-file", "bodyfile": "--body-file", "postdata": "--post-data",
              "bodydata": "--body-data", "header": "--header", "method": "--method",
              "input": "--input-file", "base": "--base", "outputdocument": "-O",
              "useragent": "--user-agent", "user": "--user", "password": "--password"}
_WGET_PROXIES = {"httpproxy": "http_proxy", "httpsproxy": "https_proxy",
                 "ftpproxy": "ftp_proxy"}
_WGET_VALUE = frozenset({"-O", "--output-document", "-o", "--output-file", "-P",
                         "--directory-prefix", "-U", "--user-agent", "--header", "-e",
                         "--execute", "--post-data", "--post-file", "--body-data",
                         "--body-file", "--method", "-t", "--tries", "-T", "--timeout",
                         "-i", "--input-file", "-B", "--base", "--config", "-a",
                         "--append-output", "-w", "--wait", "-Q", "--quota", "-l", "--level",
                         "-A", "--accept", "-R", "--reject", "-D", "--domains", "-I",
                         "--include-directories", "-X", "--exclude-directories", "--user",
                         "--password", "--ca-certificate", "--certificate", "--private-key"})


def wgetrc_args(text: str) -> list[str]:
    """The argv a wgetrc file (or one ``-e`` command per line) stands for."""
    out: list[str] = []
    for raw in text.splitlines()[:4096]:
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        key = name.strip().lower().replace("_", "").replace("-", "")
        value = value.strip()
        if key in _WGET_OPTS:
            out.extend([_WGET_OPTS[key], value])
        elif key in _WGET_PROXIES:
            out.append(f"{_WGET_PROXIES[key]}={value}")
        elif key == "useproxy":
            continue
        else:
            out.append(f"--{name.strip().replace('_', '-')}={value}")
    return out


def _wget_argv(an: Any, argv: list[str], env: dict[str, str], stdin: str | None) -> list[str]:
    args = argv[1:]
    merged: list[str] = []
    rc: str | None = None
    for i, a in enumerate(args):
        if a == "--config" and i + 1 < len(args):
            rc = args[i + 1]
        elif a.startswith("--config="):
            rc = a.split("=", 1)[1]
    if "--no-config" not in args:
        if rc is None:
            rc = _literal_dir(env.get("WGETRC")) or posixpath.join(
                _literal_dir(env.get("HOME")) or _HOME, ".wgetrc")
        text = file_text(an, rc) if rc not in ("-", "/dev/stdin") else _stdin_text(an, stdin)
        if text:
            merged.extend(wgetrc_args(text))
    i = 0
    while i < len(args):
        a = args[i]
        command = None
        if a in ("-e", "--execute") and i + 1 < len(args):
            command = args[i + 1]
            merged.extend([a, command])
            i += 2
        else:
            if a.startswith("--execute="):
                command = a.split("=", 1)[1]
            elif a.startswith("-e") and len(a) > 2 and not a.startswith("--"):
                command = a[2:]
            merged.append(a)
            i += 1
        if command is not None:
            merged.extend(wgetrc_args(command))
    return [argv[0], *merged]


def _wget_sources(args: list[str]) -> tuple[list[str], list[str]]:
    files: list[str] = []
    dests: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        key, eq, value = a.partition("=") if a.startswith("--") else (a, "", "")
        if not eq and key in _WGET_VALUE:
            value = args[i + 1] if i + 1 < len(args) else ""
            i += 1
        elif not eq and re.fullmatch(r"-[a-zA-Z]+", a) and len(a) > 2 and "-" + a[-1] in _WGET_VALUE:
            key = "-" + a[-1]
            value = args[i + 1] if i + 1 < len(args) else ""
            i += 1
        i += 1
        if not a.startswith("-"):
            if "=" not in a or "://" in a:
                dests.append(a)
            continue
        if key in ("--post-file", "--body-file", "-i", "--input-file") and value not in ("", "-"):
            files.append(value)
        elif key in ("-B", "--base"):
            dests.append(value)
    return files, dests


# ------------------------------------------------------------------ git

_GIT_NETWORK = frozenset({"fetch", "pull", "push", "ls-remote", "clone", "remote", "submodule",
                          "archive", "fetch-pack", "send-pack", "http-fetch", "http-push",
                          "lfs", "request-pull"})
_GIT_VALUE = frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path",
                        "--config-env"})


def _request_key(key: str) -> bool:
    """A git setting whose value (or subsection) goes into what git sends."""
    k = key.strip().lower()
    sec, _, rest = k.partition(".")
    return (sec == "http" and rest.endswith("extraheader")) or (
        sec == "remote" and rest.endswith((".url", ".pushurl"))) or (
        sec == "url" and rest.endswith((".insteadof", ".pushinsteadof")))


def _git_parameters(value: str) -> list[tuple[str, str]]:
    """GIT_CONFIG_PARAMETERS: 'key'='value' pairs, shell-quoted."""
    try:
        words = shlex.split(value)  # 'key'='value' is one word, key=value
    except ValueError:
        return [("", value)]
    pairs = []
    for w in words:
        key, _, val = w.partition("=")
        pairs.append((key, val))
    return pairs


def _git_judge(an: Any, argv: list[str], env: dict[str, str]) -> None:
    args = argv[1:]
    shell_values: list[tuple[str, str]] = []  # from the command line and environment
    files: list[str] = []
    work = "."
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a == "-c" and i + 1 < len(args):
            key, _, value = args[i + 1].partition("=")
            shell_values.append((key, value))
        elif a.startswith("--config-env="):
            key, _, var = a.split("=", 1)[1].partition("=")
            shell_values.append((key, env.get(var, f"${var}")))
        elif a == "-C" and i + 1 < len(args):
            work = posixpath.join(work, args[i + 1])
        elif a.startswith("--git-dir="):
            files.append(posixpath.join(a.split("=", 1)[1], "config"))
        elif a == "--git-dir" and i + 1 < len(args):
            files.append(posixpath.join(args[i + 1], "config"))
        i += 2 if a in _GIT_VALUE else 1
    ops = [a for a in args[i:] if not a.startswith("-")]
    sub = ops[0] if ops else ""
    count = env.get("GIT_CONFIG_COUNT", "")
    for n in range(min(int(count), 64) if count.isdigit() else 0):
        shell_values.append((env.get(f"GIT_CONFIG_KEY_{n}", ""), env.get(f"GIT_CONFIG_VALUE_{n}", "")))
    if "GIT_CONFIG_PARAMETERS" in env:
        shell_values.extend(_git_parameters(env["GIT_CONFIG_PARAMETERS"]))
    home = _literal_dir(env.get("HOME")) or _HOME
    files += [posixpath.join(work, ".git/config"), posixpath.join(home, ".gitconfig"),
              posixpath.join(_literal_dir(env.get("XDG_CONFIG_HOME")) or f"{home}/.config",
                             "git/config")]
    if _literal_dir(env.get("GIT_CONFIG_GLOBAL")):
        files.append(env["GIT_CONFIG_GLOBAL"])
    reads_secret = any(_credential(an, r) for r in an.acts.reads)
    if sub == "config":  # `git config [--global|--file F] [--add] KEY VALUE`
        rest = args[i + 1:]
        kv = [o for j, o in enumerate(rest) if not o.startswith("-")
              and not (j and rest[j - 1] in ("--file", "-f", "--blob", "--type"))]
        shell_values.append((kv[0], kv[1]) if len(kv) >= 2 else ("", ""))
    carries = any(_request_key(k) and (_SECRET_TEXT.search(k + v) or (
        reads_secret and _SUBSTITUTION.search(k + v))) for k, v in shell_values)
    if sub == "config":
        # `git config [--global|--file F] KEY VALUE`: a setting for later requests
        if carries:
            an.feature("client_config_secret_written")
            _remember_secret(an, _git_config_target(args[i:], work, home), an.acts.reads)
        return
    entries: list[tuple[str, str]] = []
    for path in dict.fromkeys(files):
        text = file_text(an, path)
        if text:
            entries.extend(git_config_entries(text))
        if _secret_copy(an, path):  # set from a credential by an earlier `git config`
            carries = True
    carries = carries or any(_request_key(k) and _SECRET_TEXT.search(k + v) for k, v in entries)
    if not carries or sub not in _GIT_NETWORK:
        return
    dests = [o for o in ops[1:] if "://" in o or re.match(r"^[\w.-]+@[\w.-]+:", o)]
    if not dests:
        remote = next((o for o in ops[1:] if re.fullmatch(r"[\w.-]+", o)), "origin")
        dests = [v for k, v in [*entries, *shell_values]
                 if k.lower() in (f"remote.{remote}.url".lower(), f"remote.{remote}.pushurl".lower())]
    if _remote_destination(dests, unknown_is_remote=True):
        an.feature("client_secret_request")


def _git_config_target(rest: list[str], work: str, home: str) -> str:
    for j, a in enumerate(rest):
        if a in ("--global",):
            return posixpath.join(home, ".gitconfig")
        if a in ("--file", "-f") and j + 1 < len(rest):
            return rest[j + 1]
        if a.startswith("--file="):
            return a.split("=", 1)[1]
    return posixpath.join(work, ".git/config")


# ------------------------------------------------------------------ shared

def client_argv(an: Any, name: str, argv: list[str], env: dict[str, str],
                stdin: str | None) -> list[str]:
    """The argv ``name`` (curl, wget, git) acts on once its configuration is read, and
    the judgement of what its request carries (features on ``an``). Never raises: a
    configuration that cannot be read adds nothing."""
    try:
        if name == "curl":
            merged = _curl_argv(an, argv, env, stdin)
            files, dests = _curl_sources(merged[1:])
        elif name == "wget":
            merged = _wget_argv(an, argv, env, stdin)
            files, dests = _wget_sources(merged[1:])
        elif name == "git":
            _git_judge(an, argv, env)
            return argv
        else:
            return argv
    except Exception:  # noqa: BLE001 - best effort: the command line is still judged
        return argv
    if name == "curl":  # -H @file: the file's lines are sent as headers
        for a, b in itertools.pairwise(merged[1:]):
            if a in _CURL_HEADER and b.startswith("@") and b[1:] not in ("-", ""):
                an.acts.reads.setdefault(norm_path(b[1:]))
    if any(_credential(an, f) for f in files) and _remote_destination(dests, False):
        an.feature("client_secret_request")
    return merged


_ARG_CLIENTS = CLIENTS | frozenset({"curlie", "http", "https", "xh", "nc", "ncat", "socat",
                                    "ssh", "dig", "nslookup", "host", "ping", "whois"})


def piped_arguments(an: Any, sink: str, stage: str) -> None:
    """A pipe into ``xargs CLIENT``: what flows in becomes the client's arguments (a
    header, a URL, a DNS name). When the command reads a credential, its content rides
    in the request, whichever client it is."""
    words = stage.split()
    if sink not in _ARG_CLIENTS or not words or words[0].rsplit("/", 1)[-1] != "xargs":
        return
    if not any(_credential(an, r) for r in an.acts.reads):
        return
    urls = [w.strip("'\"") for w in words if "://" in w]
    if _remote_destination(urls, unknown_is_remote=True):
        an.feature("client_secret_request")


def judge_written(an: Any) -> None:
    """Client configurations written by this command that make later requests send a
    credential (``.curlrc``, ``.wgetrc``, a git config file)."""
    for path, texts in list(an.written.items()):
        base = path.rsplit("/", 1)[-1]
        text = an._file_text(path)
        if not text:
            continue
        files: list[str] = []
        if base in (".curlrc", "_curlrc", "curlrc"):
            files = _curl_sources(curl_config_args(text))[0]
        elif base == ".wgetrc":
            files = _wget_sources(wgetrc_args(text))[0]
        elif base == ".gitconfig" or path.endswith(("/.git/config", "/git/config")):
            if any(_request_key(k) and _SECRET_TEXT.search(k + v)
                   for k, v in git_config_entries(text)):
                an.feature("client_config_secret_written")
            continue
        if any(_credential(an, f) for f in files):
            an.feature("client_config_secret_written")


def file_text(an: Any, path: str) -> str | None:
    """The text of ``path`` as the client will read it (see the module docstring)."""
    spellings = _spellings(norm_path(path))
    for p in spellings:
        text = an._file_text(p) if p in an.written else None
        if text:
            return text
    memory = an.memory
    reader = getattr(memory, "files", None) if memory is not None else None
    if reader is not None:
        text = reader(path)
        if text is not None and text is not UNREADABLE:
            return text
    if memory is not None:
        scripts = memory.scripts()
        for p in spellings:
            if p in scripts:
                return scripts[p]
    return None


def _stdin_text(an: Any, stdin: str | None) -> str | None:
    if stdin:
        return stdin
    for path in getattr(an, "stdin_paths", None) or ():
        text = file_text(an, path)
        if text:
            return text
    return None


def _spellings(path: str) -> list[str]:
    for prefix in ("./", "/workspace/", "~/", "$HOME/"):
        if path.startswith(prefix):
            rest = path[len(prefix):]
            return [path, "./" + rest, "/workspace/" + rest, "~/" + rest, "$HOME/" + rest]
    return [path]


def _credential(an: Any, path: str) -> bool:
    """A credential store, or a copy an earlier call made of one (CallMemory.secrets)."""
    p = norm_path(path)
    for home in ("~/", "$HOME/", "./"):
        if p.startswith(home):
            p = "/workspace/" + p[len(home):]
    if any(fnmatch.fnmatchcase(p, g) for g in _CREDENTIALS):
        return True
    return _secret_copy(an, path)


def _secret_copy(an: Any, path: str) -> bool:
    if an.memory is None:
        return False
    secrets = an.memory.secrets()
    return any(s in secrets for s in _spellings(norm_path(path)))


def _remember_secret(an: Any, path: str, reads: Any) -> None:
    if an.memory is None:
        return
    origin = next((r for r in reads if _credential(an, r)), None)
    if origin is not None:
        an.memory.update_secrets({norm_path(path): origin}, [], False)


def _remote_destination(dests: list[str], unknown_is_remote: bool) -> bool:
    """Some destination is another host (a URL's, ``user@host:path``'s or a bare host's);
    none at all counts as ``unknown_is_remote`` says."""
    hosts: list[str] = []
    for d in dests:
        d = d.strip()
        if not d:
            continue
        if "://" in d:
            if d.lower().startswith("file://"):
                continue
            hosts.extend(hosts_in(d) or ["?"])
        elif d.startswith(("/", ".", "~")):
            continue  # a local repository or file
        else:
            m = re.match(r"^(?:[^@/\s]+@)?(\[[^\]]+\]|[^/:\s]+)", d)
            hosts.append(m.group(1).strip("[]").lower() if m else "?")
    if not hosts:
        return unknown_is_remote
    return any(h not in _LOOPBACK and not h.startswith("127.") for h in hosts)
