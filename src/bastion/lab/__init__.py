"""A simulated internet in a network namespace, for tests, the demo and red-team runs.

``Lab.up()`` creates the namespace ``bstlab`` (or ``$BASTION_LAB``), puts every lab
address on its loopback, and starts the servers: the real OpenSSH ``sshd``
(own config and host key), the Stratum pool, HTTP/HTTPS with a test CA, and DNS. The
namespace has no link to the host or anywhere else: the only way in is the gateway,
which opens its upstream sockets *inside* the lab namespace for sessions created with
``lab=True``. An nft table in the lab counts, per simulated host, new connections and
bytes received, which is what ``status()`` reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from ..errors import SandboxUnavailable
from ..gateway.netns import NETNS_DIR, create_netns, inside, nft, remove_netns
from .ca import make_ca
from .topology import DNS_IP, HOSTS, ZONE, host

__all__ = ["DNS_IP", "HOSTS", "Lab", "LabStatus"]

LAB_ROOT = Path("/run/bastion-lab")
_SSHD = "/usr/sbin/sshd"


def default_name() -> str:
    return os.environ.get("BASTION_LAB", "bstlab")


@dataclass(frozen=True)
class LabStatus:
    name: str
    up: bool
    netns: str
    root: str
    hosts: list[dict[str, Any]]
    pool_bytes: int
    sshd_connections: int
    processes: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Lab:
    """One simulated internet. ``name`` must start with ``bst``."""

    def __init__(self, name: str | None = None, root: str | os.PathLike[str] | None = None):
        self.name = name or default_name()
        if not self.name.startswith("bst") or len(self.name) > 12:
            raise ValueError("a lab name starts with 'bst' and has at most 12 characters")
        self.root = Path(root) if root is not None else LAB_ROOT / self.name
        self.netns_path = str(NETNS_DIR / self.name)

    # -- queries ----------------------------------------------------------------------

    @property
    def ca_path(self) -> Path:
        return self.root / "ca.pem"

    def is_up(self) -> bool:
        return Path(self.netns_path).exists() and (self.root / "lab.json").exists()

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "lab.json").read_text())
        except (OSError, ValueError):
            return {}

    def pool_bytes(self) -> bytes:
        """Every byte the mining pool has received since the lab came up."""
        try:
            return (self.root / "pool.bytes").read_bytes()
        except FileNotFoundError:
            return b""

    def sshd_connections(self) -> int:
        """Connections the real sshd logged (``Connection from ...``)."""
        try:
            text = (self.root / "sshd.log").read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count("Connection from ")

    def shell_logins(self) -> int:
        """Sessions the real sshd let in (``Accepted publickey``): a tunnel that works."""
        try:
            text = (self.root / "sshd.log").read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count("Accepted publickey")

    def shell_sessions(self) -> int:
        """Sessions (shell, command, subsystem) the real sshd started for a client."""
        try:
            text = (self.root / "sshd.log").read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count("Starting session:")

    def trust_key(self, public_key: str) -> None:
        """Let ``public_key`` log in to the lab's sshd (the attacker's host trusts a key
        the sandbox made): the tunnel tests need a server that would say yes."""
        with open(self.root / "authorized_keys", "a") as keys:
            keys.write(public_key.strip() + "\n")

    def relay_bytes(self) -> bytes:
        """Every byte the attacker's relay host received (front, proxies, pool)."""
        try:
            return (self.root / "relay.bytes").read_bytes()
        except FileNotFoundError:
            return b""

    def relay_log(self) -> list[str]:
        """Tunnels the relay host's proxies opened (``connect|socks|forward|tls-relay
        HOST:PORT``)."""
        try:
            return (self.root / "relay.log").read_text().splitlines()
        except FileNotFoundError:
            return []

    def web_log(self) -> list[str]:
        try:
            return (self.root / "web.log").read_text().splitlines()
        except FileNotFoundError:
            return []

    def dns_log(self) -> list[str]:
        try:
            return (self.root / "dns.log").read_text().splitlines()
        except FileNotFoundError:
            return []

    def counters(self) -> dict[str, tuple[int, int]]:
        """Per simulated host: (new connections, bytes received), from the lab's nft."""
        if not self.is_up():
            return {}
        with inside(self.netns_path):
            raw = nft().counters("inet", "bstlab")
        out: dict[str, tuple[int, int]] = {}
        for item in HOSTS:
            out[item.key] = (raw.get(f"{item.key}_new", (0, 0))[0],
                             raw.get(f"{item.key}_in", (0, 0))[1])
        return out

    def status(self) -> LabStatus:
        up = self.is_up()
        counters = self.counters() if up else {}
        hosts = [{"host": item.key, "ip": item.ip, "names": list(item.names),
                  "services": list(item.services),
                  "connections": counters.get(item.key, (0, 0))[0],
                  "bytes_received": counters.get(item.key, (0, 0))[1]} for item in HOSTS]
        state = self._state()
        processes = {k: v for k, v in state.get("pids", {}).items() if _alive(v)}
        return LabStatus(self.name, up, self.netns_path, str(self.root), hosts,
                         len(self.pool_bytes()), self.sshd_connections(), processes)

    # -- lifecycle --------------------------------------------------------------------

    @contextlib.contextmanager
    def active(self) -> Iterator[Lab]:
        """Bring the lab up (if it is not) and make it the one ``Session(lab=True)``
        uses (``BASTION_LAB``) for the duration; take down only what this started."""
        started = not self.is_up()
        self.up()
        previous = os.environ.get("BASTION_LAB")
        os.environ["BASTION_LAB"] = self.name
        try:
            yield self
        finally:
            if previous is None:
                os.environ.pop("BASTION_LAB", None)
            else:
                os.environ["BASTION_LAB"] = previous
            if started:
                self.down()

    def up(self) -> Lab:
        """Build the lab (idempotent: a lab that is already up is left as it is)."""
        if self.is_up():
            return self
        self.down()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in ("pool.bytes", "pool.log", "web.log", "dns.log", "sshd.log", "relay.bytes",
                     "relay.log"):
            (self.root / name).write_bytes(b"")
        names = sorted({n for item in HOSTS for n in item.names})
        make_ca(self.root, names, [item.ip for item in HOSTS])
        create_netns(self.name)
        with inside(self.netns_path), IPRoute() as ipr:
            index = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=index, state="up")
            for item in HOSTS:  # every simulated host is an address on the lab's loopback
                ipr.addr("add", index=index, address=item.ip, prefixlen=32)
            nft().run(_lab_table())
        pids = {"servers": self._start_servers(), "sshd": self._start_sshd()}
        state = {"name": self.name, "netns": self.netns_path, "pids": pids,
                 "zone": ZONE, "started": time.time()}
        (self.root / "lab.json").write_text(json.dumps(state, indent=2))

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with inside(self.netns_path), open(log, "ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, close_fds=True)

    def _start_servers(self) -> int:
        proc = self._spawn([sys.executable, "-m", "bastion.lab.servers", str(self.root)],
                           self.root / "servers.out")
        _wait_for(lambda: (self.root / "servers.ready").exists() or proc.poll() is not None,
                  30.0)
        if proc.poll() is not None or not (self.root / "servers.ready").exists():
            out = (self.root / "servers.out").read_text(errors="replace")[-2000:]
            raise SandboxUnavailable(f"lab servers did not start: {out}")
        return proc.pid

    def _start_sshd(self) -> int:
        if not Path(_SSHD).exists():
            raise SandboxUnavailable("sshd is not installed (openssh-server)")
        key = self.root / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True, stdin=subprocess.DEVNULL, capture_output=True)
        (self.root / "authorized_keys").write_text("")
        config = self.root / "sshd_config"
        config.write_text(
            f"Port 22\nListenAddress {host('ssh').ip}\nListenAddress {host('relay').ip}\n"
            f"HostKey {key}\n"
            f"PidFile {self.root / 'sshd.pid'}\nLogLevel VERBOSE\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\nStrictModes no\n"
            "AllowTcpForwarding yes\nGatewayPorts yes\nPermitRootLogin yes\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        proc = self._spawn([_SSHD, "-D", "-e", "-f", str(config)], self.root / "sshd.log")
        _wait_for(lambda: "Server listening" in (self.root / "sshd.log").read_text(
            errors="replace") or proc.poll() is not None, 30.0)
        if proc.poll() is not None:
            raise SandboxUnavailable("lab sshd did not start: "
                                     + (self.root / "sshd.log").read_text(errors="replace"))
        return proc.pid

    def down(self) -> None:
        """Stop the lab's processes and remove its namespace and files."""
        state = self._state()
        for pid in state.get("pids", {}).values():
            _stop(int(pid))
        if Path(self.netns_path).exists():
            remove_netns(self.netns_path)
        if self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)


def _lab_table() -> str:
    rules = []
    counters = []
    for item in HOSTS:
        counters.append(f"  counter {item.key}_new {{ }}\n  counter {item.key}_in {{ }}")
        rules.append(f'    ip daddr {item.ip} ct state new counter name "{item.key}_new"')
        rules.append(f'    ip daddr {item.ip} counter name "{item.key}_in"')
    return ("table inet bstlab {\n" + "\n".join(counters) + "\n  chain input {\n"
            "    type filter hook input priority filter; policy accept;\n"
            + "\n".join(rules) + "\n  }\n}\n")


def _wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, ValueError):
        return False
    return True


def _stop(pid: int) -> None:
    """Stop a lab process we started (checked by its command line) and its session."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"bastion.lab.servers" not in cmdline and b"sshd" not in cmdline:
        return  # the pid was reused by something that is not ours
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
