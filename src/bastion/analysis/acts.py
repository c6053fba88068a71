"""What one simple command does to files and whom it talks to, from its parsed argv.

Rules judge acts, not spellings: "writes ~/.bashrc", "deletes tests/test_a.py",
"connects to 203.0.113.10:4444". This module turns one decoded argv (wrappers already
removed by the analyser) into those acts. Paths are normalised only lexically: relative
paths get a ``./`` prefix (so ``*/.bashrc`` matches ``.bashrc`` typed bare), ``..`` is
folded, and ``~``/``$HOME`` are kept as written; rules that need a real location
resolve them against the workspace (``under`` / ``over`` operators).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

__all__ = ["Acts", "argv_acts", "hosts_in", "norm_path", "option_tokens", "subcommands"]

# Options that take a value, per program, where the value must not be read as an operand.
_VALUE_OPTS: dict[str, frozenset[str]] = {
    # (head -n 2 / tail -c 100 read no file named 2 or 100)
    "head": frozenset({"-n", "-c", "--lines", "--bytes"}),
    "tail": frozenset({"-n", "-c", "--lines", "--bytes", "-s", "--sleep-interval", "--pid"}),
    "git": frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace"}),
    "kubectl": frozenset({"-n", "--namespace", "--context", "--kubeconfig", "-l"}),
    "aws": frozenset({"--profile", "--region", "--endpoint-url", "--output"}),
    "docker": frozenset({"-H", "--host", "--context", "-c", "--config"}),
    "systemctl": frozenset({"-H", "--host", "-M", "--machine", "-t", "--type", "-p",
                            "--property"}),
    "cp": frozenset({"-t", "--target-directory", "-S", "--suffix"}),
    "mv": frozenset({"-t", "--target-directory", "-S", "--suffix"}),
    "install": frozenset({"-m", "--mode", "-o", "--owner", "-g", "--group", "-t",
                          "--target-directory", "-S", "--suffix"}),
    "ln": frozenset({"-t", "--target-directory", "-S", "--suffix"}),
    "tee": frozenset(),
    "chmod": frozenset({"--reference"}),
    "chown": frozenset({"--reference", "--from"}),
    "sed": frozenset({"-e", "--expression", "-f", "--file", "-l", "--line-length"}),
    "perl": frozenset({"-e", "-E", "-M", "-I"}),
    "ruby": frozenset({"-e", "-r", "-I", "-C", "-E", "-F", "--encoding"}),
    "awk": frozenset({"-f", "--file", "-v", "--assign", "-F", "--field-separator", "-i",
                      "--include", "-l", "--load", "-E", "--exec", "-W"}),
    "curl": frozenset({"-o", "--output", "-H", "--header", "-d", "--data", "-u", "--user",
                       "-X", "--request", "-x", "--proxy", "-A", "--user-agent", "-e",
                       "--referer", "-b", "--cookie", "-c", "--cookie-jar", "-F", "--form",
                       "-T", "--upload-file", "--data-binary", "--data-raw", "-m",
                       "--max-time", "--connect-timeout", "-w", "--write-out", "-K",
                       "--config", "--cacert", "--cert", "--key", "-r", "--range"}),
    "wget": frozenset({"-O", "--output-document", "-o", "--output-file", "-P",
                       "--directory-prefix", "-U", "--user-agent", "--header", "-e",
                       "--post-data", "--post-file", "-t", "--tries", "-T", "--timeout"}),
    "ssh": frozenset({"-b", "-c", "-D", "-E", "-e", "-F", "-I", "-i", "-J", "-L", "-l", "-m",
                      "-O", "-o", "-p", "-Q", "-R", "-S", "-W", "-w", "-B"}),
    "scp": frozenset({"-c", "-F", "-i", "-J", "-l", "-o", "-P", "-S", "-D", "-X"}),
    "rsync": frozenset({"-e", "--rsh", "--port", "-f", "--filter", "--include",
                        "--exclude", "-B", "--password-file", "--log-file", "-T",
                        "--temp-dir", "--exclude-from", "--include-from", "--files-from"}),
    "nc": frozenset({"-p", "-s", "-w", "-i", "-q", "-e", "-c", "-x", "-X", "-P", "-I", "-O",
                     "-T", "-V", "-W", "-M", "-m"}),
    "dd": frozenset(),
    "rclone": frozenset({"--max-age", "--min-age", "--max-size", "--min-size", "--transfers",
                         "--checkers", "--include", "--exclude", "--filter", "--config",
                         "--bwlimit", "--log-file", "--log-level", "--max-depth", "--backup-dir",
                         "--suffix", "--include-from", "--exclude-from", "--filter-from"}),
    "mount": frozenset({"-o", "--options", "-t", "--types", "-L", "--label", "-U", "--uuid",
                        "-O", "--test-opts", "-N", "--namespace"}),
    "tar": frozenset({"-f", "--file", "-C", "--directory", "-T", "--files-from", "-X",
                      "--exclude-from", "--exclude"}),
}
_VALUE_OPTS["ncat"] = _VALUE_OPTS["netcat"] = _VALUE_OPTS["nc"]
_VALUE_OPTS["gawk"] = _VALUE_OPTS["mawk"] = _VALUE_OPTS["nawk"] = _VALUE_OPTS["awk"]
_VALUE_OPTS["grep"] = frozenset({"-m", "-A", "-B", "-C", "-d", "-D", "--max-count", "--context",
                                 "--after-context", "--before-context", "--label", "--include",
                                 "--exclude", "--exclude-dir", "--color", "--colour"})
_VALUE_OPTS["egrep"] = _VALUE_OPTS["fgrep"] = _VALUE_OPTS["grep"]
# Programs whose short-option clusters end in a value option (`grep -zom 1`).
_CLUSTER_VALUES = frozenset({"grep", "egrep", "fgrep"})
_VALUE_OPTS["autossh"] = _VALUE_OPTS["ssh"] | {"-M"}

_COPIERS = frozenset({"cp", "mv", "install", "ln", "rsync"})
_BUILDERS = frozenset({"gcc", "cc", "g++", "c++", "clang", "clang++", "tcc", "rustc", "go",
                       "gfortran", "nasm", "as", "ld", "ghc", "nim", "zig"})
_DELETERS = frozenset({"rm", "unlink", "shred", "rmdir", "srm", "wipe"})
_MODERS = frozenset({"chmod", "chown", "chgrp", "chattr", "setfacl", "setcap"})
_TOUCHERS = frozenset({"touch", "truncate", "mkfifo", "mknod"})
_NO_FILE = ("/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/zero", "/dev/tty")
_HOST = re.compile(r"^(?:[\w.%+-]+@)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,252}))"
                   r"(?::(\d{1,5}))?$")
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]{0,15})://(?:[^@/\s]*@)?(\[[^\]]+\]|[^/:?#\s]+)"
                  r"(?::(\d{1,5}))?")
_MODE = re.compile(r"-[rwxXst]+")
# perl/ruby switches up to an in-place edit: -i, -pi, -lni.bak (-M/-I/-e take values)
_SWITCHES_INPLACE = re.compile(r"^-[0-9aclnpsuUwWxX]*i")  # chmod -x FILE: a mode, not an option
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


@dataclass
class Acts:
    """The acts of one command line, accumulated over its simple commands."""

    writes: dict[str, None] = field(default_factory=dict)
    deletes: dict[str, None] = field(default_factory=dict)
    modes: dict[str, None] = field(default_factory=dict)
    paths: dict[str, None] = field(default_factory=dict)
    reads: dict[str, None] = field(default_factory=dict)
    hosts: dict[str, None] = field(default_factory=dict)
    # Writes of the simple command being walked (in order, repeats kept): the analyser
    # pairs them with the text that command printed or read from a heredoc.
    recent: list[str] = field(default_factory=list)

    def write(self, path: str) -> None:
        if path:
            self.writes.setdefault(path)
            self.recent.append(path)


_PROC_ROOT = re.compile(r"^(?:/proc/(?:self|thread-self|\d+)(?:/task/(?:\d+))?/root)+(?=/|$)")


def norm_path(word: str) -> str:
    """A path as rules compare it: ``./`` for relative, ``..`` folded, case kept."""
    if not word or word in ("-", "--"):
        return ""
    if word.startswith(("/", "~", "$")):
        head, sep, rest = word.partition("/")
        if not sep:
            return word
        if word.startswith("/"):
            if word == "/":
                return "/"
            # /proc/self/root, /proc/<pid>/root (and a task's) are the root itself
            return _PROC_ROOT.sub("", posixpath.normpath(word)) or "/"
        return head + "/" + posixpath.normpath(rest) if rest else head + "/"
    return "./" + posixpath.normpath(word)


def _looks_like_path(word: str) -> bool:
    if not word or word.startswith("-") or "://" in word or len(word) > 4096 or any(
            ch.isspace() for ch in word):
        return False
    return "/" in word or word.startswith((".", "~")) or word.endswith(
        (".py", ".sh", ".pth", ".cfg", ".ini", ".toml", ".json", ".yml", ".yaml", ".txt"))


def _operands(name: str, args: list[str]) -> list[str]:
    """Non-option arguments (option values skipped where the program is known)."""
    takes = _VALUE_OPTS.get(name, frozenset())
    out: list[str] = []
    i = 0
    only = False
    while i < len(args):
        a = args[i]
        if only or not a.startswith("-") or a == "-":
            out.append(a)
        elif a == "--":
            only = True
        elif a in takes or (name in _CLUSTER_VALUES and not a.startswith("--") and len(a) > 2
                            and f"-{a[-1]}" in takes):
            i += 1
        i += 1
    return out


def option_tokens(name: str, args: list[str]) -> list[str]:
    """Options as the program sees them: ``-fNR`` -> ``-f -N -R`` for getopt programs,
    ``--opt=value`` -> ``--opt``. Used only to add ``PROGRAM -X`` tokens to cmd.args."""
    out: list[str] = []
    for a in args:
        if a.startswith("--") and "=" in a:
            out.append(a.split("=", 1)[0])
        elif a.startswith("-") and not a.startswith("--") and 2 < len(a) <= 8 and a[1:].isalpha():
            out.extend("-" + ch for ch in a[1:])
    return out


def subcommands(name: str, args: list[str]) -> list[str]:
    """``PROGRAM SUB``, ``PROGRAM SUB SUB2`` and ``PROGRAM SUB SUB2 SUB3`` from the first
    non-option operands (``git -C x commit`` -> ``git commit``)."""
    ops = _operands(name, args)[:3]
    return [" ".join([name, *ops[:n]]) for n in range(1, len(ops) + 1)]


def hosts_in(word: str) -> list[str]:
    """Hosts named by one argument: URL authorities and ``host:port``/``user@host``."""
    m = _URL.match(word)
    if m:
        host = m.group(2).strip("[]").lower()
        return [host] if host else []
    return []


def _remote(word: str) -> str | None:
    """``[user@]host:path`` (scp/rsync style) -> host."""
    if "://" in word or word.startswith(("/", ".", "~")):
        return None
    m = re.match(r"^(?:[^@/\s]+@)?([\w.-]+|\[[0-9a-fA-F:.]+\]):{1,2}(?!//)", word)
    if not m or (len(m.group(1)) == 1 and "@" not in word):
        return None
    return m.group(1).strip("[]").lower()


_READERS: frozenset[str] | None = None
# Readers whose every operand is a file (no pattern/script operand first).
_PURE_READERS = frozenset({"cat", "tac", "less", "more", "head", "tail", "strings", "xxd", "od",
                           "hexdump", "base64", "base32", "gzip", "bzip2", "xz", "zstd",
                           "md5sum", "sha1sum", "sha256sum", "nl", "bat", "zip", "7z", "gpg",
                           "shred-copy", "melt"})


_TEXT_TOOLS: frozenset[str] | None = None


def _text_tools() -> frozenset[str]:
    global _TEXT_TOOLS
    if _TEXT_TOOLS is None:
        from ..rules.vocabulary import vocabulary

        _TEXT_TOOLS = vocabulary()["text_tools"]
    return _TEXT_TOOLS


def _readers() -> frozenset[str]:
    global _READERS
    if _READERS is None:
        from ..rules.vocabulary import vocabulary

        _READERS = vocabulary()["file_readers"]
    return _READERS


_SECRET_DIRS = frozenset({".ssh", ".aws", ".gnupg", ".kube", ".docker", ".azure", "gcloud",
                          ".password-store"})


def _tar_directory(args: list[str]) -> str | None:
    """tar's -C/--directory: where its relative operands are read from."""
    for i, a in enumerate(args):
        if a in ("-C", "--directory") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--directory="):
            return a.split("=", 1)[1]
    return None


def _awk_inplace(args: list[str]) -> bool:
    """gawk loads its in-place extension: ``-i inplace``, ``-iinplace``, ``--include=inplace``."""
    for i, a in enumerate(args):
        if a in ("-i", "--include") and i + 1 < len(args) and args[i + 1] in ("inplace", "inplace.awk"):
            return True
        if a in ("-iinplace", "--include=inplace", "-iinplace.awk", "--include=inplace.awk"):
            return True
    return False


def argv_acts(name: str, argv: list[str], acts: Acts) -> None:
    """Record what ``argv`` (program ``name``) reads, writes, deletes, re-modes and contacts."""
    args = argv[1:]
    ops = _operands(name, args)
    if name in _readers():
        base = _tar_directory(args) if name == "tar" else None
        recursive = name in ("tar", "zip", "7z") or (name in ("cp", "rsync", "scp") and any(
            a in ("-r", "-R", "-a", "--recursive", "--archive") or (
                a.startswith("-") and not a.startswith("--") and ("r" in a or "a" in a or "R" in a))
            for a in args))
        reads = ops
        if name in ("grep", "egrep", "fgrep", "rg", "ag", "ack", "jq") and ops and not any(
                a in ("-e", "-f", "--regexp", "--file") or a.startswith(("--regexp=", "--file="))
                for a in args):
            reads = ops[1:]  # the first operand is the pattern (`grep -zom 1 ".*"`), not a file
        for o in reads:
            if base and not o.startswith(("/", "~", "$", "-")):
                o = posixpath.join(base, o)  # tar -C DIR NAME reads DIR/NAME
            if _looks_like_path(o) or o.startswith("/") or (
                    name in _PURE_READERS and o not in ("-",) and not o.startswith("$")):
                acts.reads.setdefault(norm_path(o))
                if recursive and posixpath.basename(o.rstrip("/")) in _SECRET_DIRS:
                    # a whole key directory archived or copied reads every key in it
                    acts.reads.setdefault(norm_path(o.rstrip("/")) + "/*")
        for i, a in enumerate(args):  # curl -d @file, --data-binary @file, -F x=@file
            key, eq, value = a.partition("=") if a.startswith("--") else (a, "", "")
            if key in ("-d", "--data", "--data-binary", "--data-urlencode", "--json",
                       "-F", "--form", "--form-string") or (a.startswith(("-d@", "-F"))
                                                          and len(a) > 2):
                if not eq:
                    value = args[i + 1] if key == a and i + 1 < len(args) else a[2:]
                m = re.search(r"(?:^|=)[@<]([^;@\s]+)", value)
                if m and m.group(1) != "-":
                    acts.reads.setdefault(norm_path(m.group(1)))
        if name == "dd":
            for a in args:
                if a.startswith("if="):
                    acts.reads.setdefault(norm_path(a[3:]))
    if name in _BUILDERS:
        for i, a in enumerate(args):  # gcc -o prog, go build -o bin/x: the output is written
            if a == "-o" and i + 1 < len(args):
                acts.write(norm_path(args[i + 1]))
            elif a.startswith("-o") and len(a) > 2 and name not in ("go", "make"):
                acts.write(norm_path(a[2:]))
    if name == "ab":
        for i, a in enumerate(args[:-1]):
            if a in ("-p", "-u"):
                acts.reads.setdefault(norm_path(args[i + 1]))
    if name in ("http", "https", "httpie", "xh", "xhs"):
        for a in args:  # httpie file fields: name@path, @path
            m = re.match(r"^[\w-]*@([^@\s]+)$", a)
            if m and not a.startswith("-"):
                acts.reads.setdefault(norm_path(m.group(1)))
    if name in _readers():
        for i, a in enumerate(args):  # uploads: curl -T FILE, wget --post-file=FILE
            key, eq, value = a.partition("=")
            if name == "curl" and re.fullmatch(r"-[a-zA-Z]*T", key) and key != "-T" and not eq:
                key = "-T"  # a short-option cluster ending in T: curl -sT FILE
            if key in ("-T", "--upload-file", "--post-file", "--body-file"):
                value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
                if value and value != "-":
                    acts.reads.setdefault(norm_path(value))
    for a in args if name not in ("echo", "printf") else ():
        value = a.split("=", 1)[1] if a.startswith("-") and "=" in a else a
        if _looks_like_path(value):
            acts.paths.setdefault(norm_path(value))
    if name in _COPIERS and ops:
        target = None
        for i, a in enumerate(args):
            if a in ("-t", "--target-directory") and i + 1 < len(args):
                target = args[i + 1]
            elif a.startswith("--target-directory="):
                target = a.split("=", 1)[1]
        if target is None and len(ops) >= 2:
            target = ops[-1]
            sources = ops[:-1]
        else:
            sources = ops
        if target and name != "rsync" or (target and _remote(target) is None):
            dest = norm_path(target)
            acts.write(dest)
            if len(sources) >= 1 and (target.endswith("/") or len(sources) > 1):
                for s in sources:
                    acts.write(norm_path(posixpath.join(target, posixpath.basename(s.rstrip("/")))))
        if name == "mv":
            for s in sources:
                acts.deletes.setdefault(norm_path(s))
    elif name == "tee":
        for o in ops:
            if o not in _NO_FILE:
                acts.write(norm_path(o))
    elif name == "dd":
        for a in args:
            if a.startswith("of=") and a[3:] not in _NO_FILE:
                acts.write(norm_path(a[3:]))
    elif name == "sed" and any(
            a == "--in-place" or a.startswith("--in-place=")
            or (a.startswith("-") and not a.startswith("--") and "i" in a[1:]) for a in args):
        has_script_opt = any(a in ("-e", "--expression", "-f", "--file", "-E") for a in args)
        files = ops if has_script_opt else ops[1:]
        for o in files:
            acts.write(norm_path(o))
    elif name in ("perl", "ruby") and any(_SWITCHES_INPLACE.match(a) for a in args):
        # perl/ruby -i[.bak] (alone or ending a switch cluster: -pi, -lpi.bak): every
        # file operand is rewritten in place; the code comes from -e or the first operand
        has_script_opt = any(a in ("-e", "-E") or re.fullmatch(r"-[a-zA-Z]*e", a) for a in args)
        for o in ops if has_script_opt else ops[1:]:
            acts.write(norm_path(o))
    elif name in ("awk", "gawk") and _awk_inplace(args):
        # gawk -i inplace: each input file is replaced by the program's output
        has_script_opt = any(a in ("-f", "--file", "-E", "--exec") for a in args)
        for o in ops if has_script_opt else ops[1:]:
            if "=" not in o:  # var=value operands are assignments, not files
                acts.write(norm_path(o))
    elif name in ("split", "csplit") and len(ops) >= 2 and not ops[-1].isdigit():
        # split FILE PREFIX writes PREFIXaa, PREFIXab...: the pieces, as a glob
        acts.write(norm_path(ops[-1]) + "*")
        acts.reads.pop(norm_path(ops[-1]), None)
    elif name == "mount" and len(ops) >= 2:
        # a mount (a bind of another file, a tmpfs, an overlay) puts something else over
        # the mount point: the path now reads as the source, as if it had been replaced
        acts.write(norm_path(ops[-1]))
    elif name in _TOUCHERS:
        for o in ops if name != "truncate" else [a for a in ops]:
            if not re.fullmatch(r"[+-<>/%]?\d+[KMGTP]?", o):
                acts.write(norm_path(o))
    elif name in _DELETERS:
        for o in ops:
            acts.deletes.setdefault(norm_path(o))
    elif name in _MODERS:
        files = [a for a in args if not a.startswith("-") or _MODE.fullmatch(a)]
        for o in files[1:] if name != "setcap" else files[1:]:
            acts.modes.setdefault(norm_path(o))
    elif name in ("curl", "wget"):
        for i, a in enumerate(args):
            if name == "curl" and re.fullmatch(r"-[a-zA-Z]+o", a):
                a = "-o"  # a short-option cluster ending in o: curl -so FILE
            if a in ("-o", "--output", "-O", "--output-document") and i + 1 < len(args):
                if not (name == "curl" and a == "-O"):
                    if args[i + 1] not in ("-",) + _NO_FILE:
                        acts.write(norm_path(args[i + 1]))
    if name in _text_tools():
        return  # a text tool's arguments are data, not destinations
    for o in ops:
        for h in hosts_in(o):
            acts.hosts.setdefault(h)
    for a in args:
        if a.startswith("-") and "=" in a:
            for h in hosts_in(a.split("=", 1)[1]):
                acts.hosts.setdefault(h)
    if name in ("scp", "rsync", "sftp", "pscp", "sshfs"):
        for o in ops:
            h = _remote(o)
            if h:
                acts.hosts.setdefault(h)
    if name in ("ssh", "autossh", "sftp", "mosh", "dbclient", "plink"):
        dest = next(iter(ops), None)
        if dest:
            m = _HOST.match(dest.removeprefix("ssh://"))
            if m:
                acts.hosts.setdefault(m.group(1).strip("[]").lower())
    if name in ("nc", "ncat", "netcat", "nc.traditional", "nc.openbsd", "telnet", "pwncat",
                "cryptcat", "socat"):
        for o in ops:
            if name == "socat":
                m = re.match(r"(?i)^(?:tcp[46]?|tcp-connect|openssl|openssl-connect|udp[46]?|"
                             r"udp-connect|ssl|socks4a?|proxy):([^:,]+)", o)
                if m:
                    acts.hosts.setdefault(m.group(1).strip("[]").lower())
                continue
            if _IPV4.match(o) or re.match(r"^[A-Za-z][\w-]*(?:\.[\w-]+)+$", o) or o == "localhost":
                acts.hosts.setdefault(o.lower())
                break
