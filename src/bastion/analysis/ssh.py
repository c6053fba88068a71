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

What "SSH allowed to a host" means (a policy entry ``protocol: ssh``): a shell or a
command on that host, no forwarding of any kind. Forwarding cannot be seen inside the
encryption, so the client is judged on everything that could ask for it later:

* a **multiplexing master** (``-M``, ``ControlMaster`` other than ``no``): any process
  that reaches its control socket can add forwards later with a hand-made mux request,
  with no new exec and no new connection to see;
* a **config that cannot be read** as the client reads it (``-F /dev/stdin`` from a
  pipe, a FIFO, a device): what cannot be judged is refused (fail closed);
* a **remote command that dials out** itself (``/dev/tcp``, ``nc``, a socket in
  interpreter code, a miner's JSON-RPC, a ``stratum+`` URL): the allowed host used as a
  pivot to a destination the sandbox may not reach (``tunnels.ssh_remote_egress``) —
  also a script the remote shell reads from ssh's stdin (``ssh host < dial.sh``, or
  ``cat dial.sh | ssh host bash``: what waits in the pipe is copied with ``tee(2)``,
  which leaves it for ssh). A pipe whose writer is still writing, or that is full, cannot
  be read whole: what it holds so far is judged, the rest reported
  (``tunnels.ssh_remote_stdin``, medium).

The same judgement runs **again when the client's connection reaches the gateway**
(``net.connect`` of an allowed SSH connection, owner = the ssh process or its
``ProxyCommand`` child), and the gateway waits for it before dialling: a config or
``Include`` file written after the exec (ssh reads its config before it connects) is
read then. A config file changed after both (an ``Include`` written once ssh has connected,
or while the gateway's connect raced it) is caught when the client's call ends: the
configs of every client judged in the session are read again and forwarding they ask
for now but did not then is reported (``tunnels.ssh_config_changed_after_start``).
Not enforced: a config file changed back between ssh reading it and its
connect; SSH spoken by a client that is not a known binary (paramiko, a static copy
that differs) is reported (medium), its options unknowable; the ``~C`` escape command
line is a feature only where enabled (``EnableEscapeCommandline``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import glob
import hashlib
import os
import shlex
import stat
import threading
from collections.abc import Callable, Iterable

from ..engine.finding import Finding
from ..events import Event, EventKind, Severity

__all__ = ["SshExecDetector", "client_identity", "config_features", "option_features",
           "remote_command", "remote_egress"]

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
                     "localcommand": "ssh_local_command", "gatewayports": "ssh_gateway_ports",
                     "controlmaster": "ssh_control_master",
                     "enableescapecommandline": "ssh_escape_commandline",
                     "remotecommand": "ssh_remote_command"}
_BOOL_FLAG_FEATURES = {"M": "ssh_control_master"}
# the keywords whose "no" (or "none") turns the feature off
_OFF_VALUES = {"ssh_tun": ("no", "false", ""), "ssh_gateway_ports": ("no", "false", ""),
               "ssh_local_command": ("no", "false", ""),
               "ssh_control_master": ("no", "false", ""),
               "ssh_escape_commandline": ("no", "false", ""),
               "ssh_proxy_command": ("none",), "ssh_jump": ("none",),
               "ssh_remote_command": ("none", "")}
# what a remote command does that makes the allowed host a pivot: it opens connections
# of its own (analysed like any command; the analysis' feature names)
_DIALS = frozenset({"devtcp", "nc_connect", "interp_socket", "file_to_network"})
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
    features, configs, _ = _parse(args)
    return features, configs


def remote_command(args: list[str]) -> str | None:
    """The command an ssh argv runs on the remote host (its words joined by spaces, as
    ssh sends them to the remote shell), or None."""
    words = _parse(args)[2]
    return " ".join(words) if words else None


def remote_egress(command: str) -> list[str]:
    """Why a remote command makes the remote host a pivot for the sandbox's traffic
    (empty: it does not dial out by itself). Analysed like a local command."""
    from ..analysis.analyzer import analyze_command
    from ..gateway.stream import scan

    why: list[str] = []
    with contextlib.suppress(Exception):
        analysed = analyze_command(command)
        why += sorted(set(analysed.get("cmd.features") or []) & _DIALS)
        why += [f"url {u}" for u in analysed.get("cmd.urls") or []
                if str(u).lower().startswith(("stratum", "tcp://", "udp://", "socks"))]
    found = scan(command.encode(errors="replace"))
    if found is not None:
        why.append(f"{found.app} ({found.reason})")
    return why


def _parse(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    features: list[str] = []
    configs: list[str] = []
    i = 1
    destination = False
    while i < len(args):
        arg = args[i]
        if arg == "--":  # options end; the destination follows unless already seen
            rest = list(args[i + 1:])
            return features, configs, rest if destination else rest[1:]
        if not arg.startswith("-") or arg == "-":
            # ssh parses options again after the destination (`ssh host -R ...`); the
            # next non-option starts the remote command
            if destination:
                return features, configs, list(args[i:])
            destination = True
            i += 1
            continue
        j = 1
        while j < len(arg):
            flag = arg[j]
            if flag in _BOOL_FLAG_FEATURES:
                features.append(_BOOL_FLAG_FEATURES[flag])
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
    return features, configs, []


def _keyword_features(line: str) -> list[str]:
    text = line.strip()
    if not text or text.startswith("#"):
        return []
    keyword, _, rest = text.replace("=", " ", 1).partition(" ")
    feature = _KEYWORD_FEATURES.get(keyword.strip().lower())
    if feature is None:
        return []
    value = rest.strip().strip('"').lower()
    if value in _OFF_VALUES.get(feature, ()):
        return []
    if feature == "ssh_remote_command":
        # a command in the config runs like one on the command line: judged by what it does
        return ["ssh_remote_egress"] if remote_egress(rest.strip()) else []
    return [feature]


UNREADABLE = "\0unreadable"  # what a reader returns for a config it cannot judge


def config_features(read: Callable[[str], str | None], path: str, depth: int = 0) -> list[str]:
    """Features of an ssh config file and the files it ``Include``s (``read`` returns a
    file's text as the process sees it, None if there is none, ``UNREADABLE`` if it is
    there but cannot be read without taking bytes from ssh: fail closed)."""
    if depth > 8:
        return []
    text = read(path)
    if text is None:
        return []
    if text == UNREADABLE:
        return ["ssh_config_unreadable"]
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


def _read_regular(path: str) -> str | None:
    """A regular file's text; ``UNREADABLE`` for anything else that exists (a pipe, a
    FIFO, a device: opening or reading it could block or take ssh's bytes)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.stat(path)
        except OSError:
            return None
        return UNREADABLE
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return UNREADABLE
        data = os.pread(fd, _MAX_CONFIG, 0)  # from offset 0: ssh's own offset unmoved
    except OSError:
        return UNREADABLE
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")


def _reader(pid: int) -> Callable[[str], str | None]:
    root = f"/proc/{pid}/root"

    def read(path: str) -> str | None:
        fd = _fd_path(path)
        if fd is not None:
            # the process's own descriptor (-F /dev/stdin < file): a regular file is
            # read afresh; a pipe cannot be read without taking ssh's bytes
            try:
                mode = os.stat(f"/proc/{pid}/fd/{fd}").st_mode
            except OSError:
                return None
            if not stat.S_ISREG(mode):
                return UNREADABLE
            return _read_regular(f"/proc/{pid}/fd/{fd}")
        if "*" in path or "?" in path:  # Include with a glob
            found = sorted(glob.glob(root + path))[:16]
            texts = [t for t in (_read_regular(item) for item in found) if t is not None]
            if UNREADABLE in texts:
                return UNREADABLE
            return "\n".join(texts) if texts else None
        return _read_regular(root + path)
    return read


class SshExecDetector:
    """An ssh client (by binary identity) that forwards, relays, multiplexes, hides,
    or runs a remote command that dials out: judged at its exec and again when its
    allowed SSH connection reaches the gateway (which waits for the verdict)."""

    name = "ssh_exec"
    kinds = frozenset({EventKind.EXEC, EventKind.NET_CONNECT, EventKind.LIFECYCLE})

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # session id -> pid -> the client as judged: (args, cwd, its call's cgroup.procs,
        # config features then)
        self._judged: dict[str, dict[int, tuple[tuple[str, ...], str, str | None,
                                                frozenset[str]]]] = {}

    def observe(self, event: Event) -> list[Finding]:
        if event.kind is EventKind.LIFECYCLE:
            if event.fields.get("life.state") == "call_end":
                return self._rejudge(event.session_id)
            return []
        if event.kind is EventKind.NET_CONNECT:
            return self._connect(event)
        pid = event.pid
        if pid is None:
            return []
        identity = client_identity(pid)
        if identity is None:
            return []
        fields = event.fields
        args = [str(a) for a in (fields.get("proc.args") or [])]
        name = str(fields.get("proc.name") or os.path.basename(args[0] if args else ""))
        if fields.get("proc.renamed"):
            # proc.name is the real program's: the name it was run under is the file's
            name = os.path.basename(str(fields.get("proc.exe") or (args[0] if args else name)))
        cwd = str(fields.get("proc.cwd") or "/")
        self._remember(event.session_id, pid, args, cwd)
        return _judge(pid, identity, args, cwd, name)

    def _remember(self, session_id: str, pid: int, args: list[str], cwd: str) -> None:
        """Keep what the client's config files said when it was judged, to compare
        when its call ends (``_rejudge``)."""
        features = frozenset(_config_features_of(pid, args, cwd))
        with self._lock:
            clients = self._judged.setdefault(session_id, {})
            if pid not in clients and len(clients) >= _MAX_REMEMBERED:
                clients.pop(next(iter(clients)))
            clients[pid] = (tuple(args), cwd, _procs_file(pid), features)

    def _rejudge(self, session_id: str) -> list[Finding]:
        """A call ended: the config files (and ``Include``s) of each ssh client judged
        in this session are read again. One that asks for forwarding now and did not
        when the client was judged was written after ssh started, to race the
        judgement (an ``Include`` file that appears 50 ms after the exec). ssh may or
        may not have read it: the attempt is the finding."""
        with self._lock:
            clients = dict(self._judged.get(session_id, {}))
        found: list[Finding] = []
        for pid, (args, cwd, procs, then) in clients.items():
            # the client itself, or the copy `ssh -f` forked off before it exited
            live = next((p for p in [pid, *(_cgroup_pids(procs) or [])]
                         if client_identity(p) is not None and tuple(_cmdline(p)) == args),
                        None)
            if live is None:
                with self._lock:
                    self._judged.get(session_id, {}).pop(pid, None)
                continue  # gone: nothing of it reads a config any more
            now = frozenset(_config_features_of(live, list(args), cwd))
            added = sorted(now - then)
            if not added:
                continue
            with self._lock:
                if pid in self._judged.get(session_id, {}):
                    self._judged[session_id][pid] = (args, cwd, procs, now)
            found.append(Finding(
                rule_id="tunnels.ssh_config_changed_after_start",
                severity=Severity.HIGH,
                message=(f"ssh client pid {pid}: its config files ask for "
                         f"{', '.join(added)} now, which they did not when it started "
                         "and was judged"),
                categories=("tunnel",),
                mitre=("T1572", "T1021.004"),
                evidence={"pid": pid, "args": list(args)[:32], "features": added},
            ))
        return found

    def _connect(self, event: Event) -> list[Finding]:
        """An allowed SSH connection: the client holding it (or whose ``ProxyCommand``
        holds it) is judged again on its config as it is now; a connection whose SSH
        is spoken by no known client is reported (its options cannot be known)."""
        fields = event.fields
        if fields.get("net.decision") != "allow" or not (
                fields.get("net.app") == "ssh" or fields.get("net.ssh_banner")):
            return []
        pid = event.pid
        client = None
        for candidate in (pid, _parent(pid)):
            if candidate and client_identity(candidate) is not None:
                client = candidate
                break
        where = f"{fields.get('net.dst_ip')}:{fields.get('net.dst_port')}"
        if client is None:
            return [Finding(
                rule_id="tunnels.ssh_unvetted_client",
                severity=Severity.MEDIUM,
                message=(f"SSH connection to {where} spoken by no known ssh client "
                         f"(pid {pid}): its forwarding requests cannot be judged"),
                categories=("tunnel",),
                mitre=("T1572", "T1021.004"),
                evidence={"pid": pid, "banner": fields.get("net.ssh_banner")},
            )]
        identity = client_identity(client) or "ssh"
        args = _cmdline(client)
        try:
            cwd = os.readlink(f"/proc/{client}/cwd")
        except OSError:
            cwd = "/"
        name = os.path.basename(args[0]) if args else identity
        self._remember(event.session_id, client, args, cwd)
        # a renamed copy was judged at its exec; here only what it will do counts
        found = _judge(client, identity, args, cwd, name, at_connect=True)
        for finding in found:
            finding.evidence["connection"] = where
        return found

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._judged.pop(session_id, None)


_MAX_REMEMBERED = 64  # ssh clients per session whose configs are compared at call end


def _config_features_of(pid: int, args: list[str], cwd: str) -> list[str]:
    """The features of the config files the client ``pid`` uses (``-F`` files, else
    ~/.ssh/config, with their ``Include``s), read as the process sees them now."""
    _features, configs, _remote = _parse(args)
    read = _reader(pid)
    out: list[str] = []
    for config in configs or [_home_config(pid)]:
        if config:
            path = config if config.startswith("/") else os.path.join(cwd, config)
            out += config_features(read, path)
    return out


def _judge(pid: int, identity: str, args: list[str], cwd: str, name: str, *,
           at_connect: bool = False) -> list[Finding]:
    """The findings on one ssh client. ``at_connect``: judged again as its connection
    reaches the gateway (a renamed copy was already reported at its exec)."""
    features, configs, remote = _parse(args)
    read = _reader(pid)
    for config in configs or [_home_config(pid)]:
        if config:
            path = config if config.startswith("/") else os.path.join(cwd, config)
            features += config_features(read, path)
    dials = remote_egress(" ".join(remote)) if remote else []
    script, unjudged = _stdin_script(pid, remote, features)
    if script:
        dials += [f"stdin script: {why}" for why in remote_egress(script)]
    renamed = not at_connect and os.path.basename(name) not in CLIENT_NAMES
    features = list(dict.fromkeys(features))
    found: list[Finding] = []
    if features or renamed:
        why = ", ".join(features) or "no forwarding"
        found.append(Finding(
            rule_id="tunnels.ssh_forward_exec",
            severity=Severity.HIGH,
            message=(f"{identity} client run as {name!r} ({why})"
                     + (": a renamed copy of an ssh client" if renamed else "")),
            categories=("tunnel",),
            mitre=("T1572", "T1021.004") + (("T1036.003",) if renamed else ()),
            evidence={"identity": identity, "name": name, "features": features,
                      "configs": configs},
        ))
    if dials:
        command = " ".join(remote)
        found.append(Finding(
            rule_id="tunnels.ssh_remote_egress",
            severity=Severity.HIGH,
            message=(f"{identity} runs a remote command that dials out by itself "
                     f"({', '.join(dials)}): the allowed host used as a pivot"),
            categories=("tunnel",),
            mitre=("T1572", "T1090"),
            evidence={"identity": identity, "remote_command": command[:512],
                      "dials": dials},
        ))
    elif unjudged and at_connect:
        # reported when the connection is judged (a pipe still being written at the
        # exec is usually done by the connect, and judged whole then)
        found.append(Finding(
            rule_id="tunnels.ssh_remote_stdin",
            severity=Severity.MEDIUM,
            message=(f"{identity} feeds a remote {unjudged} from a pipe: what it runs on "
                     "the allowed host cannot be read (not judged)"),
            categories=("tunnel",),
            mitre=("T1021.004",),
            evidence={"identity": identity, "remote_command": " ".join(remote)[:512]},
        ))
    return found


_STDIN_READERS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox", "python",
                            "python3", "perl", "ruby", "node", "php"})


def _stdin_script(pid: int, remote: list[str], features: list[str]) -> tuple[str, str]:
    """What the remote side will run from ssh's stdin: ``ssh host < script`` (a login
    shell reads it) or ``ssh host bash -s < script``, and whether some of it could not
    be read (then the reader's name, for a medium report). A regular file is read (the
    text, judged like a remote command); a pipe is copied without taking ssh's bytes
    (``cat x | ssh host bash``): the same act as a remote command, the same verdict.
    Only a pipe still being written (or full) is partly unknown."""
    if "ssh_control_master" in features:
        return "", ""
    try:
        words = shlex.split(" ".join(remote))
    except ValueError:
        words = " ".join(remote).split()
    if words:
        reader = os.path.basename(words[0])
        reader = reader.rstrip("0123456789.") if reader.startswith("python") else reader
        if reader not in _STDIN_READERS or not (
                len(words) == 1 or words[1] in ("-", "-s", "-i") or words[-1] == "-"):
            return "", ""
    else:
        reader = "login shell"
    target = f"/proc/{pid}/fd/0"
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return "", ""
    if stat.S_ISREG(mode):
        text = _read_regular(target)
        return (text if text and text != UNREADABLE else ""), ""
    if stat.S_ISFIFO(mode):
        peeked = peek_pipe(target)
        if peeked is None:
            return "", reader
        data, full = peeked
        text = data.decode("utf-8", "replace")
        # what it holds is judged; it is the whole script only if nothing more can come
        whole = not full and not _pipe_writers(pid, os.stat(target).st_ino)
        return text, "" if whole else reader
    if stat.S_ISSOCK(mode):
        return "", reader
    return "", ""


_libc = ctypes.CDLL(None, use_errno=True)
_SPLICE_F_NONBLOCK = 2
_F_GETPIPE_SZ = 1032
_F_SETPIPE_SZ = 1031


def peek_pipe(path: str) -> tuple[bytes, bool] | None:
    """The bytes waiting in the pipe at ``path`` (``/proc/PID/fd/N``), copied with
    ``tee(2)`` so its reader still gets every one, and whether the pipe is full (more
    may be waiting behind). None if it cannot be opened or copied."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            capacity = fcntl.fcntl(fd, _F_GETPIPE_SZ)
        except OSError:
            return None
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(write_end, _F_SETPIPE_SZ, capacity)
            copied = _libc.tee(fd, write_end, ctypes.c_size_t(capacity),
                               ctypes.c_uint(_SPLICE_F_NONBLOCK))
            if copied < 0:
                if ctypes.get_errno() == 11:  # EAGAIN: nothing waiting yet
                    return b"", False
                return None
            chunks, left = [], copied
            while left > 0:
                chunk = os.read(read_end, left)
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks), copied >= capacity
        finally:
            os.close(read_end)
            os.close(write_end)
    finally:
        os.close(fd)


def _procs_file(pid: int) -> str | None:
    """The ``cgroup.procs`` file of ``pid``'s cgroup (its tool call), None if unknown."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            line = next((x for x in f if x.startswith("0::")), "")
    except OSError:
        return None
    path = line[3:].strip()
    # the v2 hierarchy: /sys/fs/cgroup, or its "unified" mount on a hybrid host
    return next((p for p in (f"/sys/fs/cgroup{path}/cgroup.procs",
                             f"/sys/fs/cgroup/unified{path}/cgroup.procs")
                 if path and os.path.exists(p)), None)


def _cgroup_pids(procs: str | None) -> list[int] | None:
    if procs is None:
        return None
    try:
        with open(procs) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return None


def _pipe_writers(pid: int, inode: int) -> list[int]:
    """Processes of ``pid``'s cgroup (its tool call) other than ``pid`` that hold the
    pipe ``inode`` open for writing: while one does, more of a script may come."""
    pids = _cgroup_pids(_procs_file(pid))
    if pids is None:
        return [0]  # unknown: assume a writer (the script is then not taken as whole)
    target = f"pipe:[{inode}]"
    writers = []
    for other in pids:
        if other == pid:
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{other}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{other}/fd/{fd}") != target:
                        continue
                    with open(f"/proc/{other}/fdinfo/{fd}") as info:
                        flags = next((int(x.split()[1], 8) for x in info
                                      if x.startswith("flags:")), 0)
                    if flags & 3:  # O_WRONLY or O_RDWR
                        writers.append(other)
                        break
    return writers


def _parent(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
        return int(stat_line[stat_line.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(1 << 16)
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


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
