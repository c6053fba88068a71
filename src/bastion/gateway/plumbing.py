"""Wiring a session's network namespace to the gateway.

Addressing (all link-local, all created by bastion, none routable):

* the gateway listens on ``169.254.0.1`` (``GATEWAY_IP``) on an interface ``bstgw0``
  (one end of a veth pair whose other end goes nowhere) in the host namespace, one TCP port and one UDP (DNS) port per process;
* each gateway process claims a *slot* N (1..46, a lock file under /run/bastion-gw)
  and gives its sessions /32 addresses from 169.254.(64+4N-4).0/22, skipping the
  169.254.169.0/24 block that holds the cloud metadata address;
* a session's veth pair is ``bstNN-<serial>`` on the host side (no address, a /32 route
  to the session) and ``eth0`` inside the session (its /32, default route via the
  gateway address).

Firewall, in two places, both loaded as one atomic nft batch:

* host table ``ip bst_gw_NN``: everything arriving from this slot's veths is DNATed —
  TCP to the transparent listener (the original destination stays readable with
  ``SO_ORIGINAL_DST``), UDP/53 to the resolver; anything else addressed to the host
  from a veth is dropped, and nothing from a veth is ever forwarded;
* session table ``inet bst``: loopback is free; TCP over IPv4 and UDP/53 leave; every
  other packet (other UDP, ICMP, IPv6, anything else) is dropped and counted in named
  counters, and each distinct IPv4 destination of a dropped packet (address, protocol,
  ports) is remembered in a dynamic set for five minutes, so that the gateway's
  ``net.drop`` events say *where* a probe went.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute

from ..errors import SandboxUnavailable
from .netns import create_netns, inside, nft, remove_netns

__all__ = [
    "DROP_COUNTERS",
    "GATEWAY_IF",
    "GATEWAY_IP",
    "SLOT_SIZE",
    "SessionLink",
    "Slot",
    "claim_slot",
    "cleanup_stale",
    "ensure_gateway_interface",
    "host_table",
    "session_table",
]

GATEWAY_IP = "169.254.0.1"
GATEWAY_IF = "bstgw0"
SLOT_DIR = Path("/run/bastion-gw")
_SLOTS = [n for n in range(1, 48) if not (64 + 4 * (n - 1) <= 169 < 64 + 4 * n)]
_serial = itertools.count()
SLOT_SIZE = 4 * 256 - 2  # session addresses per slot (a /22 less two)
DROP_COUNTERS = ("drop_udp", "drop_icmp", "drop_ip6", "drop_other")


@dataclass
class Slot:
    """This process's share of the link-local space, held by an flock for its lifetime."""

    number: int
    fd: int

    @property
    def prefix(self) -> str:
        return f"bst{self.number:02d}-"

    @property
    def table(self) -> str:
        return f"bst_gw_{self.number:02d}"

    def address(self, index: int) -> str:
        if not 0 <= index < SLOT_SIZE:
            raise SandboxUnavailable("no free session address in this gateway slot")
        base = int(ipaddress.IPv4Address(f"169.254.{64 + 4 * (self.number - 1)}.0"))
        return str(ipaddress.IPv4Address(base + index + 1))

    @property
    def registry(self) -> Path:
        """One empty file per live session namespace, so a later owner of the slot can
        remove what a crashed owner left behind."""
        return SLOT_DIR / f"slot-{self.number}.netns"

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def claim_slot() -> Slot:
    """Lock the first free slot; leftovers of a dead owner of that slot are removed."""
    SLOT_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    for number in _SLOTS:
        fd = os.open(SLOT_DIR / f"slot-{number}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        slot = Slot(number, fd)
        _clear_slot(slot)
        return slot
    raise SandboxUnavailable("every gateway slot is taken by another bastion process")


def cleanup_stale() -> int:
    """Remove what dead gateway processes left behind (their slot is no longer locked):
    host tables, veths, session namespaces. Returns how many slots were cleared."""
    cleared = 0
    if not SLOT_DIR.is_dir():
        return 0
    for number in _SLOTS:
        path = SLOT_DIR / f"slot-{number}"
        if not path.exists():
            continue
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # alive: not ours to touch
        try:
            _clear_slot(Slot(number, fd))
            cleared += 1
        finally:
            os.close(fd)
    return cleared


def _clear_slot(slot: Slot) -> None:
    slot.registry.mkdir(mode=0o700, exist_ok=True)
    for entry in slot.registry.iterdir():
        remove_netns(entry.name)
        entry.unlink()
    with contextlib.suppress(OSError):
        nft().run(f"delete table ip {slot.table}")
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if name.startswith(slot.prefix):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=link["index"])


def ensure_gateway_interface() -> None:
    """The interface that carries ``GATEWAY_IP`` (shared by all slots)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=GATEWAY_IF)
        if not found:
            with contextlib.suppress(Exception):  # another process may win the race
                # a veth pair, not a dummy: the dummy driver is not available everywhere
                ipr.link("add", ifname=GATEWAY_IF, kind="veth", peer=f"{GATEWAY_IF}p")
                ipr.link("set", index=ipr.link_lookup(ifname=f"{GATEWAY_IF}p")[0], state="up")
            found = ipr.link_lookup(ifname=GATEWAY_IF)
        index = found[0]
        addrs = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)]
        if GATEWAY_IP not in addrs:
            with contextlib.suppress(Exception):
                ipr.addr("add", index=index, address=GATEWAY_IP, prefixlen=32)
        ipr.link("set", index=index, state="up")


def host_table(slot: Slot, tcp_port: int, dns_port: int) -> str:
    match = f'iifname "{slot.prefix}*"'
    return f"""
table ip {slot.table} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    {match} meta l4proto tcp dnat to {GATEWAY_IP}:{tcp_port}
    {match} udp dport 53 dnat to {GATEWAY_IP}:{dns_port}
    {match} drop
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    {match} ip daddr {GATEWAY_IP} tcp dport {tcp_port} accept
    {match} ip daddr {GATEWAY_IP} udp dport {dns_port} accept
    {match} drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    {match} drop
    oifname "{slot.prefix}*" drop
  }}
}}
"""


def session_table() -> str:
    return """
table inet bst {
  set dropped {
    type ipv4_addr . inet_proto . inet_service . inet_service
    flags dynamic, timeout; timeout 5m; size 4096
  }
  counter drop_udp { }
  counter drop_icmp { }
  counter drop_ip6 { }
  counter drop_other { }
  chain output {
    type filter hook output priority filter; policy drop;
    oif "lo" accept
    meta nfproto ipv6 counter name "drop_ip6" drop
    meta l4proto tcp accept
    udp dport 53 accept
    meta l4proto udp update @dropped { ip daddr . meta l4proto . udp dport . udp sport } counter name "drop_udp" drop
    meta l4proto icmp update @dropped { ip daddr . meta l4proto . 0 . 0 } counter name "drop_icmp" drop
    meta nfproto ipv4 update @dropped { ip daddr . meta l4proto . 0 . 0 } counter name "drop_other" drop
    counter name "drop_other" drop
  }
  chain input {
    type filter hook input priority filter; policy drop;
    iif "lo" accept
    ct state established,related accept
  }
}
"""


class SessionLink:
    """A session's namespace, veth pair and firewall. ``close()`` removes all three."""

    def __init__(self, slot: Slot, index: int, name: str) -> None:
        self.slot = slot
        self.index = index
        self.address = slot.address(index)
        # a name never reused in this process: a closed session's veth can outlive it
        self.host_if = f"{slot.prefix}{next(_serial):x}"
        self.netns_name = name
        self.netns_path = ""
        self._closed = False
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        (self.slot.registry / self.netns_name).touch()
        self.netns_path = create_netns(self.netns_name)
        host_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with inside(self.netns_path):
                # no IPv6 on the session's link at all: nothing to leak, no ND chatter
                with contextlib.suppress(FileNotFoundError):  # kernel without IPv6: fine
                    Path("/proc/sys/net/ipv6/conf/default/disable_ipv6").write_text("1")
                with IPRoute() as ipr:
                    ipr.link("add", ifname="eth0", kind="veth",
                             peer={"ifname": self.host_if, "net_ns_fd": host_ns})
                    eth0 = ipr.link_lookup(ifname="eth0")[0]
                    ipr.addr("add", index=eth0, address=self.address, prefixlen=32)
                    ipr.link("set", index=eth0, state="up")
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                    ipr.route("add", dst=GATEWAY_IP, dst_len=32, oif=eth0, scope=253)
                    ipr.route("add", dst="0.0.0.0", dst_len=0, gateway=GATEWAY_IP, oif=eth0)
                nft().run(session_table())
        finally:
            os.close(host_ns)
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=self.host_if)[0]
            ipr.link("set", index=index, state="up")
            # replace: a stale route to this address may survive on a dying veth
            ipr.route("replace", dst=self.address, dst_len=32, oif=index, scope=253)

    def drop_counters(self) -> dict[str, tuple[int, int]]:
        with inside(self.netns_path):
            return nft().counters("inet", "bst")

    def dropped(self) -> list[tuple[str, str, int, int]]:
        """Destinations of dropped packets in the last five minutes:
        (address, protocol, destination port, source port); ports are 0 where the
        protocol has none."""
        with inside(self.netns_path):
            text = nft().run("list set inet bst dropped", json_output=True)
        out: list[tuple[str, str, int, int]] = []
        for item in json.loads(text or "{}").get("nftables", []):
            for elem in (item.get("set") or {}).get("elem", []):
                value = elem.get("elem", elem).get("val", elem) if isinstance(elem, dict) else elem
                concat = value.get("concat") if isinstance(value, dict) else None
                if isinstance(concat, list) and len(concat) == 4:
                    with contextlib.suppress(TypeError, ValueError):
                        out.append((str(concat[0]), str(concat[1]), int(concat[2]),
                                    int(concat[3])))
        return out

    def close(self) -> None:
        """Remove the namespace; the kernel then destroys both veth ends (and the host
        route) on its own, which is much cheaper than deleting the veth here."""
        if self._closed:
            return
        self._closed = True
        if self.netns_path:
            remove_netns(self.netns_path)
        with contextlib.suppress(FileNotFoundError):
            (self.slot.registry / self.netns_name).unlink()
        _reaper.later(self.host_if)


class _VethReaper:
    """Deletes a closed session's host-side veth if it outlives its namespace (it does
    while anything still holds the namespace open). Deleting a veth waits for RCU grace
    periods (tens of ms), so it is done here, off the session's close path."""

    DELAY = 1.0

    def __init__(self) -> None:
        self._pending: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def later(self, ifname: str) -> None:
        with self._cond:
            self._pending.append((time.monotonic() + self.DELAY, ifname))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="bst-veth-reaper")
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    if not self._cond.wait(timeout=30):
                        self._thread = None
                        return
                due, ifname = self._pending[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(timeout=wait)
                    continue
                self._pending.pop(0)
            with contextlib.suppress(Exception), IPRoute() as ipr:
                found = ipr.link_lookup(ifname=ifname)
                if found:
                    ipr.link("del", index=found[0])


_reaper = _VethReaper()
