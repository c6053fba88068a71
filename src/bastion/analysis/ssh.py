"""ssh as a capability, not a name: what an exec'd ssh client will do, whatever it is called.

Command analysis reads the command line before it runs; an agent can get around names
(a copy of ``/usr/bin/ssh`` made in an earlier call, run as ``./helper``), option
spelling (``-o 'remoteforward …'``) and the command line itself (``-F notes.txt`` whose
``RemoteForward`` line is in a file). At exec time bastion sees the process, so:

* **identity** by the binary, not its name: the exec'd file is a known ssh client if it
  is the same file (device, inode) as one, or a copy of one (same size and SHA-256);
* **options** read the way ssh reads them: flags (``-R``, ``-L``, ``-D``, ``-w``, ``-W``,
  ``-J``, bundled like ``-fNR``) and ``-o`` keywords in any letter case with ``=`` or a
  space;
* **config files** it will use: ``-F FILE`` (else ``~/.ssh/config``), following
  ``Include``, read through ``/proc/PID/root`` — the file as the sandboxed process sees
  it.

``SshExecDetector`` turns an exec of an ssh client that forwards ports, relays through
a proxy command or runs under another name into a verdict (``tunnels.ssh_forward_exec``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shlex
import stat
import threading
from collections.abc import Callable, Iterable

from ..engine.finding import Finding
from ..events import Event, EventKind, Severity

__all__ = ["SshExecDetector", "client_identity", "config_features", "option_features"]

KNOWN_CLIENTS = ("/usr/bin/ssh", "/usr/bin/scp", "/usr/bin/sftp", "/usr/bin/autossh",
                 "/usr/lib/autossh/autossh", "/usr/bin/dbclient")
CLIENT_NAMES = frozenset({"ssh", "scp", "sftp", "autossh", "dbclient"})
_FLAG_FEATURES = {"R": "ssh_forward_remote", "L": "ssh_forward_local",
                  "D": "ssh_forward_dynamic", "w": "ssh_tun", "W": "ssh_stdio_forward",
                  "J": "ssh_jump"}
_KEYWORD_FEATURES = {"remoteforward": "ssh_forward_remote", "localforward": "ssh_forward_local",
                     "dynamicforward": "ssh_forward_dynamic", "tunnel": "ssh_tun",
                     "proxycommand": "ssh_proxy_command", "proxyjump": "ssh_jump",
                     "permitlocalcommand": "ssh_local_command",
                     "localcommand": "ssh_local_command", "gatewayports": "ssh_gateway_ports"}
_VALUE_FLAGS = frozenset("BbcDEeFIiJLlmOoPpQRSWw")
_MAX_CONFIG = 256 * 1024


class _Known:
    """(dev, ino) and (size, sha256) of the ssh clients installed on the host."""

    def __init__(self, paths: Iterable[str] = KNOWN_CLIENTS) -> None:
        self.inodes: dict[tuple[int, int], str] = {}
        self.digests: dict[tuple[int, str], str] = {}
        self.sizes: set[int] = set()
        for path in paths:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                name = os.path.basename(path)
                self.inodes[(st.st_dev, st.st_ino)] = name
                self.sizes.add(st.st_size)
                with open(path, "rb") as f:
                    self.digests[(st.st_size, hashlib.sha256(f.read()).hexdigest())] = name


_known: _Known | None = None
_known_lock = threading.Lock()
_copies: dict[tuple[int, int, int, int], str | None] = {}


def _known_clients() -> _Known:
    global _known
    with _known_lock:
        if _known is None:
            _known = _Known()
        return _known


def client_identity(pid: int) -> str | None:
    """The ssh client (``ssh``, ``scp``, ...) the process ``pid`` runs, by its binary:
    the same file as an installed client, or a byte-identical copy; None otherwise."""
    known = _known_clients()
    try:
        fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        hit = known.inodes.get((st.st_dev, st.st_ino))
        if hit is not None or st.st_size not in known.sizes:
            return hit
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in _copies:
            return _copies[key]
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        found = known.digests.get((st.st_size, digest.hexdigest()))
        if len(_copies) > 4096:
            _copies.clear()
        _copies[key] = found
        return found
    finally:
        os.close(fd)


def option_features(args: list[str]) -> tuple[list[str], list[str]]:
    """(features, config files given with -F) from an ssh argv, read as ssh reads it."""
    features: list[str] = []
    configs: list[str] = []
    i = 1
    destination = False
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            # ssh parses options again after the destination (`ssh host -R ...`); the
            # next non-option starts the remote command
            if destination or arg == "--":
                break
            destination = True
            i += 1
            continue
        j = 1
        while j < len(arg):
            flag = arg[j]
            if flag in _VALUE_FLAGS:
                value = arg[j + 1:] or (args[i + 1] if i + 1 < len(args) else "")
                if not arg[j + 1:]:
                    i += 1
                if flag in _FLAG_FEATURES:
                    features.append(_FLAG_FEATURES[flag])
                elif flag == "o":
                    features += _keyword_features(value)
                elif flag == "F":
                    configs.append(value)
                break
            j += 1
        i += 1
    return features, configs


def _keyword_features(line: str) -> list[str]:
    text = line.strip()
    if not text or text.startswith("#"):
        return []
    keyword, _, rest = text.replace("=", " ", 1).partition(" ")
    feature = _KEYWORD_FEATURES.get(keyword.strip().lower())
    if feature is None:
        return []
    value = rest.strip().lower()
    if feature in ("ssh_tun", "ssh_gateway_ports", "ssh_local_command") and value in (
            "no", "false", ""):
        return []
    if feature == "ssh_proxy_command" and value == "none":
        return []
    return [feature]


def config_features(read: Callable[[str], str | None], path: str, depth: int = 0) -> list[str]:
    """Features of an ssh config file and the files it ``Include``s (``read`` returns a
    file's text as the process sees it, or None)."""
    if depth > 8:
        return []
    text = read(path)
    if text is None:
        return []
    features: list[str] = []
    base = os.path.dirname(path)
    for line in text[:_MAX_CONFIG].splitlines():
        stripped = line.strip()
        keyword = stripped.replace("=", " ", 1).split(" ", 1)[0].lower()
        if keyword == "include":
            for target in shlex.split(stripped.replace("=", " ", 1).split(" ", 1)[1]
                                      if " " in stripped else ""):
                features += config_features(read, target if target.startswith("/")
                                            else os.path.join(base, target), depth + 1)
            continue
        features += _keyword_features(stripped)
    return features


def _reader(pid: int) -> Callable[[str], str | None]:
    root = f"/proc/{pid}/root"

    def read(path: str) -> str | None:
        fd = _fd_path(path)
        if fd is not None:
            # the process's own descriptor (-F /dev/stdin < file): read it only if it is
            # a regular file (opened afresh, so ssh's offset is not moved); a pipe's
            # bytes would be taken from ssh
            target = f"/proc/{pid}/fd/{fd}"
            try:
                if not stat.S_ISREG(os.stat(target).st_mode):
                    return None
                with open(target, encoding="utf-8", errors="replace") as f:
                    return f.read(_MAX_CONFIG)
            except OSError:
                return None
        if "*" in path or "?" in path:  # Include with a glob
            found = sorted(glob.glob(root + path))[:16]
            texts = []
            for item in found:
                with contextlib.suppress(OSError, UnicodeDecodeError), \
                        open(item, encoding="utf-8", errors="replace") as f:
                    texts.append(f.read(_MAX_CONFIG))
            return "\n".join(texts) if texts else None
        try:
            with open(root + path, encoding="utf-8", errors="replace") as f:
                return f.read(_MAX_CONFIG)
        except OSError:
            return None
    return read


class SshExecDetector:
    """An exec of an ssh client (by binary identity) that forwards, relays or hides."""

    name = "ssh_exec"
    kinds = frozenset({EventKind.EXEC})

    def observe(self, event: Event) -> list[Finding]:
        pid = event.pid
        if pid is None:
            return []
        identity = client_identity(pid)
        if identity is None:
            return []
        fields = event.fields
        args = [str(a) for a in (fields.get("proc.args") or [])]
        features, configs = option_features(args)
        cwd = str(fields.get("proc.cwd") or "/")
        read = _reader(pid)
        for config in configs or [_home_config(pid)]:
            if config:
                path = config if config.startswith("/") else os.path.join(cwd, config)
                features += config_features(read, path)
        name = str(fields.get("proc.name") or os.path.basename(args[0] if args else ""))
        renamed = name not in CLIENT_NAMES
        features = list(dict.fromkeys(features))
        if not features and not renamed:
            return []
        why = ", ".join(features) or "no forwarding"
        return [Finding(
            rule_id="tunnels.ssh_forward_exec",
            severity=Severity.HIGH,
            message=(f"{identity} client run as {name!r} ({why})"
                     + (": a renamed copy of an ssh client" if renamed else "")),
            categories=("tunnel",),
            mitre=("T1572", "T1021.004") + (("T1036.003",) if renamed else ()),
            evidence={"identity": identity, "name": name, "features": features,
                      "configs": configs},
        )]

    def forget(self, session_id: str) -> None:
        return None


def _fd_path(path: str) -> int | None:
    """N for /dev/stdin (0), /dev/fd/N, /proc/self/fd/N; None for other paths."""
    if path == "/dev/stdin":
        return 0
    for prefix in ("/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"):
        if path.startswith(prefix) and path[len(prefix):].isdigit():
            return int(path[len(prefix):])
    return None


def _home_config(pid: int) -> str | None:
    """~/.ssh/config of the process (its HOME from its environment)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read(65536).split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"HOME="):
            return item[5:].decode(errors="replace").rstrip("/") + "/.ssh/config"
    return None
