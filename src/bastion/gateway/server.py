"""The gateway: one per process, serving every session of the host.

An asyncio loop in a daemon thread accepts every TCP connection the sessions open
(DNATed to it on the host side, original destination from ``SO_ORIGINAL_DST``) and
every DNS query (UDP/53). A connection is charged to its session by *source address*
(each session owns one /32 and cannot change it: it has no capabilities in its network
namespace), classified from its first bytes, decided, reported, and only then — if
allowed — dialled upstream and relayed with ``splice(2)`` in a pair of threads.

A poller thread turns each session's firewall drop counters into ``net.drop`` events and
reports long-lived connections as ``net.flow`` events.

The gateway holds each session's read-only view and its event sink, never the session:
it submits events and awaits the verdicts on the ones it must decide (a connection, a
DNS answer); the session's own executor records, evaluates and responds, never this
loop. The one exception saves that round trip, not the judgement: a web connect that is
the very same as one judged moments ago with no verdict (same holder, destination,
classification and decision; same policy, phase, session state and verdict count) is
carried at once, still submitted, and cut if its verdicts say stop.

Fail closed: an event that cannot be recorded (the sink's future failed, the session is
being terminated) refuses the connection; a parse error denies it; nothing here ever lets a
connection through because something went wrong.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ipaddress
import logging
import os
import queue
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from ..contracts import EventSink, Watched, make_event
from ..errors import BastionError, SandboxUnavailable
from ..events import Action, EventKind, Verdict, new_id
from ..policy.network import AllowEntry, NetworkPolicy
from .decide import Decision, always_denied, decide, domain_allowed, reachable, silent_allowed
from .dnsguard import (
    ExfilMeter,
    TunnelMeter,
    answers_of,
    clean_query,
    parent_of,
    parse_query,
    refusal,
    restore,
)
from .intercept import (
    InboundInspector,
    LazyInspector,
    TlsPipe,
    authority,
    bundle_text,
    upstream_context,
)
from .netns import nft
from .owner import Owners
from .plumbing import (
    DROP_COUNTERS,
    GATEWAY_IP,
    SLOT_SIZE,
    SessionLink,
    Slot,
    claim_slot,
    cleanup_stale,
    ensure_gateway_interface,
    host_table,
)
from .leaks import Leak, Secrets, StreamLeaks
from .shape import CUTS, Shape
from .sniff import MAX_PEEK, Sniff, classify
from .stream import Finding, Inspector, scan
from .upstream import Upstream

__all__ = ["Attachment", "Gateway", "GatewayStatistics"]

log = logging.getLogger(__name__)

PEEK_TIMEOUT = 0.5  # how long a client gets to say enough to be classified
PROBE_PEEK = 0.2  # how long a connection to a refused destination is read (for the record)
HOLD_TIMEOUT = 30.0
DRIP_WINDOW = 5.0  # how long a refused, still unclassified client is followed
DRIP_GAP = 1.0  # seconds of silence that end following it
DRIP_BYTES = 4096  # bytes of it read at most
JUDGED_TTL = 5.0  # how long a connect judged with no verdict is decided on the loop
_VOLATILE = frozenset({"net.conn_id", "net.src_port"})
# what a remembered judgement may cover: web traffic, whose judgement is the fields'. An
# SSH connection is judged on its client's state as it is at connect (config files,
# stdin): always awaited
_REMEMBERED = frozenset({"http", "tls"})  # how long a silent client is held, waiting for its first byte
FLOW_INTERVAL = 10.0  # seconds between net.flow reports of a live connection
POLL_INTERVAL = 0.5  # seconds between poller rounds (flow reports)
DROP_POLL_INTERVAL = 2.0  # seconds between reads of each session's drop counters
_SO_ORIGINAL_DST = 80
_STOP = {Action.DENY, Action.CUT, Action.KILL, Action.FREEZE, Action.TERMINATE,
         Action.QUARANTINE}
_SPLICE_CHUNK = 1 << 20
_RCODES = {"NXDOMAIN": 3, "REFUSED": 5, "SERVFAIL": 2}
_INSPECT_CHUNK = 256 * 1024
_INSPECT_FIRST = 16 * 1024
HANDSHAKE_TIMEOUT = 10.0  # how long each side of an intercepted TLS connection gets
SETTLE = 0.25  # a pause that ends the wait for an intercepted client's first bytes to classify


class GatewayStatistics:
    """A snapshot of the gateway's counters (for metrics and benchmarks)."""

    def __init__(self, **values: int) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"GatewayStatistics({self.__dict__})"


class _Conn:
    """One relayed connection: its sockets and byte counts, for flow/close events."""

    __slots__ = (
        "allowed_protocol",
        "attachment",
        "bytes",
        "client",
        "closed",
        "dialled",
        "done",
        "dst",
        "fields",
        "id",
        "last_flow",
        "server",
        "shape",
        "shape_reported",
        "sniff",
        "started",
    )

    def __init__(self, conn_id: str, attachment: Attachment, client: socket.socket,
                 server: socket.socket, fields: dict[str, Any], sniff: Sniff,
                 dst: tuple[str, int]) -> None:
        self.id = conn_id
        self.sniff = sniff
        self.dst = dst
        self.attachment = attachment
        self.client = client
        self.server = server
        self.fields = fields
        self.started = time.monotonic()
        self.bytes = [0, 0]  # out (sandbox -> server), in
        self.last_flow = self.started
        self.done = 0
        self.closed = False
        self.dialled: str | None = None
        self.allowed_protocol: str | None = None  # of the allow entry that let it through
        # a TLS connection's first flights are its handshake, not what it carries
        self.shape = Shape(skip=2 if sniff.app == "tls" else 0, app=sniff.app, alpn=sniff.alpn)
        self.shape_reported = False

    def cut(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def summary(self) -> dict[str, Any]:
        return {**self.fields, **self.shape.fields(), "net.bytes_out": self.bytes[0],
                "net.bytes_in": self.bytes[1],
                "net.duration": round(time.monotonic() - self.started, 6)}

    def burst(self, index: int, size: int) -> None:
        """One relayed burst: shape bookkeeping (``gateway.shape``); once it shows SSH
        framing or a miner's dialogue inside a channel not allowed to carry them, it is
        cut at once (the shell must not come up while a verdict is on its way; offering
        ALPN is a flag any client sets) and reported; inside an entry that allows any
        protocol it is reported, and its verdict decides."""
        shape = self.shape
        shape.note(index, size)
        if self.shape_reported or size >= 256 or min(shape.small) < 5:
            return
        found = shape.tunnel()
        if found is None:
            return
        self.shape_reported = True
        if self.allowed_protocol not in ("any", "tcp"):
            rule, reason = CUTS[found]
            report = {**self.summary(), "net.decision": "deny", "net.rule": rule,
                      "net.reason": reason, "net.cut": f"{rule}: {reason}"}
            self.fields["net.cut"] = report["net.cut"]
            self.cut()
            with contextlib.suppress(Exception):
                self.attachment.emit(EventKind.NET_FLOW, report)
            return
        _cut_on_stop(self.attachment, self)


class Attachment:
    """A session's link to the gateway (the ``NetworkAttachment`` of the session)."""

    def __init__(self, gateway: Gateway, view: Watched, sink: EventSink, link: SessionLink,
                 upstream: Upstream) -> None:
        self.gateway = gateway
        self.view = view
        self.sink = sink
        self.link = link
        self.upstream = upstream
        self.policy: NetworkPolicy = view.policy.network
        self.phase = self.policy.initial_phase
        self.names: dict[str, str] = {}  # address -> allowed name this session resolved
        self.meter = TunnelMeter()
        self.exfil = ExfilMeter(self.policy.dns_exfil_budget)
        # the same volume for names that are refused (nothing leaves): an attempt
        self.attempts = ExfilMeter(self.policy.dns_exfil_budget)
        self.conns: set[_Conn] = set()
        self.drops: dict[str, tuple[int, int]] = {name: (0, 0) for name in DROP_COUNTERS}
        self.dropped: set[tuple[str, str, int, int]] = set()  # destinations already reported
        self.pending: dict[int, dict[str, Any]] = {}  # undecided connections, by socket fd
        self.owners = Owners(link.netns_path, self._cgroup_root, view.call_for_cgroup,
                             getattr(view, "latest_call", None))
        # connects already judged with no verdict at all: key -> (stamp, expiry)
        self.judged: dict[tuple[Any, ...], tuple[tuple[Any, ...], float]] = {}
        self.generation = 0  # bumped by every verdict the gateway sees, phase changes
        # whether connects judged moments ago are decided on the loop (the benchmark
        # turns it off to measure what it saves)
        self.remember = True
        # ids of the latest connections decided from a remembered judgement (diagnostics)
        self.remembered: deque[str] = deque(maxlen=256)
        self.closed = False
        # TLS inspection: whether any entry of any phase terminates TLS, and the
        # context that verifies the real servers (made on first use)
        self.inspecting = any(entry.inspected(self.policy.tls_inspect)
                              for phase in self.policy.phases.values() for entry in phase.allow)
        self._upstream_tls: ssl.SSLContext | None = None
        self._secrets: Secrets | None = None

    def leaks(self, host: str | None) -> StreamLeaks | None:
        """A watcher for the workspace's secrets in what one connection sends to
        ``host`` (None when the workspace holds none)."""
        if self._secrets is None:
            from ..rules.vocabulary import vocabulary
            self._secrets = Secrets(Path(self.view.workspace),
                                    vocabulary()["credential_paths"])
        current = self._secrets.current()
        return StreamLeaks(current, host) if current else None

    def secret_in(self, data: bytes) -> Leak | None:
        """One of the workspace's secrets in ``data`` (a DNS name), meant for nobody."""
        leaks = self.leaks(None)
        return leaks.feed(data) if leaks is not None else None

    @property
    def ca_bundle(self) -> Path | None:
        """The trust bundle the sandbox should see (system CAs + the gateway's
        interception CA) when this session's TLS is inspected; None otherwise."""
        return self.gateway.trust_bundle() if self.inspecting else None

    def upstream_tls(self) -> ssl.SSLContext:
        """The client context for the real servers: system store, the upstream's CAs
        (the lab's, for lab sessions) and the policy's ``tls_ca``."""
        if self._upstream_tls is None:
            self._upstream_tls = upstream_context([*self.upstream.ca_files,
                                                   *self.policy.tls_ca])
        return self._upstream_tls

    def _cgroup_root(self) -> Path | None:
        cgroup = self.view.cgroup
        return cgroup.unified if cgroup is not None else None

    def wildcards(self) -> list[str]:
        phase = self.policy.phases.get(self.phase)
        return [e.domain for e in phase.allow if e.domain] if phase is not None else []

    @property
    def netns_path(self) -> str:
        return self.link.netns_path

    @property
    def address(self) -> str:
        return self.link.address

    def set_phase(self, phase: str) -> None:
        """Switch the allow list. Live connections the new phase would refuse are cut:
        a connection opened during ``setup`` must not carry on into ``agent``."""
        if phase not in self.policy.phases:
            raise ValueError(f"unknown network phase {phase!r}")
        self.phase = phase
        self.forget_judged()
        self.names.clear()  # names resolved under the old phase no longer count
        for conn in list(self.conns):
            again = decide(self.policy, phase, conn.dst[0], conn.dst[1], conn.sniff,
                           host_addresses=self.gateway.host_addresses)
            if not again.allow:
                conn.fields["net.cut"] = f"phase {phase}: {again.rule}"
                conn.cut()

    def record_pending(self) -> None:
        """Record connections still being classified, as refused (the session calls
        this as it starts closing, while it still takes events): a probe made just
        before the session ends must not vanish from the trail."""
        while self.pending:
            with contextlib.suppress(KeyError):
                _, fields = self.pending.popitem()
                self.emit(EventKind.NET_CONNECT, fields)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.gateway.detach(self)
        self.record_pending()
        for conn in list(self.conns):
            conn.cut()
        with contextlib.suppress(Exception):
            self.gateway.poll_drops(self)
        self.owners.close()
        self.upstream.close()
        self.link.close()

    # -- events -----------------------------------------------------------------------

    def submit(self, kind: EventKind, fields: dict[str, Any]) -> Future[list[Verdict]]:
        """Hand an event to the session (charged to the process holding the socket);
        never waits for the pipeline. Not for the event loop: the owner lookup reads
        /proc."""
        pid, call = self._owner(fields)
        return self.sink.submit(make_event(self.view, kind, call=call, pid=pid, **fields))

    def emit(self, kind: EventKind, fields: dict[str, Any]) -> None:
        """Report an event whose verdicts nobody waits for (close, drop, telemetry)."""
        try:
            self.submit(kind, fields)
        except Exception:  # noqa: BLE001 - /proc raced the process: reported unattributed
            self.sink.submit(make_event(self.view, kind, **fields))

    async def decide(self, kind: EventKind, fields: dict[str, Any]) -> list[Verdict] | None:
        """The verdicts on an event the gateway must act on, awaited on the loop; None
        if the session could not take it (treat as refused)."""
        try:
            if self.owners.known(fields):  # no /proc to read: submit from the loop
                future = self.submit(kind, fields)
            else:
                future = await asyncio.to_thread(self.submit, kind, fields)
            return await asyncio.wrap_future(future)
        except BastionError:
            return None
        except Exception:
            # the session's pipeline already failed closed; the connection is refused
            log.exception("gateway: event failed for %s", self.view.session_id)
            return None

    # -- connects judged before ------------------------------------------------------

    def forget_judged(self) -> None:
        """Every remembered judgement is void (a verdict, a phase change)."""
        self.generation += 1
        self.judged.clear()

    def _stamp(self) -> tuple[Any, ...]:
        """What a remembered judgement holds under: the same policy object, phase,
        session state, count of the session's verdicts and gateway generation."""
        count = getattr(self.view, "verdict_count", None)
        return (id(self.view.policy), self.phase, self.view.state, count, self.generation)

    def judged_key(self, fields: dict[str, Any]) -> tuple[Any, ...] | None:
        """The identity of a connect event as the rules can see it: every field but the
        connection's id and source port, and the holder (pid, call). None when the
        holder is not known without a lookup."""
        if not self.owners.known(fields):
            return None
        pid, call = self.owners.lookup(fields)
        items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                             for k, v in fields.items() if k not in _VOLATILE))
        return (pid, getattr(call, "call_id", None), items)

    def was_cleared(self, key: tuple[Any, ...]) -> bool:
        """Whether this very connect was judged, with no verdict, under the same stamp
        within ``JUDGED_TTL``: the stateless rules would say the same again."""
        hit = self.judged.get(key)
        return (hit is not None and hit[1] > time.monotonic() and hit[0] == self._stamp()
                and not self.closed)

    def clear(self, key: tuple[Any, ...], stamp: tuple[Any, ...]) -> None:
        """Remember a connect judged with no verdict (``stamp`` taken before it was
        submitted: a verdict meanwhile makes it stale)."""
        if len(self.judged) > 1024:
            self.judged.clear()
        self.judged[key] = (stamp, time.monotonic() + JUDGED_TTL)

    def cut(self, conn_id: str) -> bool:
        """Close one live connection (the responder's ``cut``)."""
        for conn in list(self.conns):
            if conn.id == conn_id:
                conn.fields["net.cut"] = "cut by a verdict"
                conn.cut()
                return True
        return False

    def _owner(self, fields: dict[str, Any]) -> tuple[int | None, Any]:
        """The process holding the connection's socket, and the tool call it belongs
        to: one sock_diag request (the socket's cgroup names the call), remembered per
        connection. Works for every address family, v4-mapped IPv6 included."""
        return self.owners.lookup(fields)


def _pool_size() -> int:
    try:
        return max(0, int(os.environ.get("BASTION_NET_POOL", "2")))
    except ValueError:
        return 2


class _LinkPool:
    """A few session links (namespace + veth + firewall) built ahead of time.

    Building a link costs ~10-20 ms of netlink and nftables work, most of a session's
    creation time. Links carry no session state until attached (the gateway maps a
    source address to its session only in ``attach``) and each is used once, so
    building them early changes nothing but latency.
    """

    def __init__(self, gateway: Gateway, size: int) -> None:
        self._gateway = gateway
        self._size = size
        self._ready: list[SessionLink] = []
        self._cond = threading.Condition()
        self._closed = False
        self._serial = 0
        if size:
            threading.Thread(target=self._fill, daemon=True, name="bst-link-pool").start()

    def take(self) -> SessionLink | None:
        with self._cond:
            link = self._ready.pop(0) if self._ready else None
            self._cond.notify()
            return link

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closed and len(self._ready) >= self._size:
                    self._cond.wait()
                if self._closed:
                    return
                self._serial += 1
                label = f"pool-{os.getpid()}-{self._serial}"
            try:
                link = self._gateway._build_link(label)
            except Exception:  # attach() builds synchronously and reports
                log.warning("gateway: could not pre-build a session link", exc_info=True)
                with self._cond:
                    self._cond.wait(1.0)
                continue
            with self._cond:
                if self._closed:
                    link.close()
                    return
                self._ready.append(link)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            ready, self._ready = self._ready, []
            self._cond.notify_all()
        for link in ready:
            link.close()


class Gateway:
    """The transparent TCP gateway and DNS resolver of this process."""

    _instance: Gateway | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> Gateway:
        with cls._lock:
            if cls._instance is None or cls._instance._stopped:
                cls._instance = cls()
                atexit.register(cls._instance.stop)
            return cls._instance

    def __init__(self) -> None:
        self._stopped = False
        self._bundle: Path | None = None
        self._bundle_lock = threading.Lock()
        self._by_addr: dict[str, Attachment] = {}
        self._alock = threading.Lock()
        self._next_index = 0
        self._used: set[int] = set()
        self._events = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bst-gw-ev")
        self._relays = _Workers("bst-relay")
        self._stats = {"accepted": 0, "allowed": 0, "denied": 0, "remembered": 0,
                       "dns_queries": 0,
                       "dns_denied": 0, "malformed": 0, "unknown_source": 0}
        try:
            self.slot: Slot = claim_slot()
        except OSError as exc:
            raise SandboxUnavailable(f"the gateway could not start: {exc}") from exc
        try:
            cleanup_stale()  # leftovers of gateway processes that died without closing
            ensure_gateway_interface()
            self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp.bind((GATEWAY_IP, 0))
            self._tcp.listen(1024)
            self._tcp.setblocking(False)
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._udp.bind((GATEWAY_IP, 0))
            self._udp.setblocking(False)
            self.tcp_port = self._tcp.getsockname()[1]
            self.dns_port = self._udp.getsockname()[1]
            nft().run(host_table(self.slot, self.tcp_port, self.dns_port))
            self.host_addresses = _host_addresses()
            self._loop = asyncio.new_event_loop()
            ready = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True,
                                            name="bst-gateway")
            self._thread.start()
            if not ready.wait(5) or not self._thread.is_alive():
                raise SandboxUnavailable("the gateway's event loop did not start")
            self._poller = threading.Thread(target=self._poll, daemon=True, name="bst-gw-poll")
            self._poller.start()
            self._pool = _LinkPool(self, size=_pool_size())
        except BaseException as exc:
            self._teardown()
            if isinstance(exc, OSError):
                raise SandboxUnavailable(f"the gateway could not start: {exc}") from exc
            raise

    # -- sessions ---------------------------------------------------------------------

    def attach(self, view: Watched, sink: EventSink, upstream: Upstream) -> Attachment:
        link = self._pool.take()
        if link is None:  # pool empty (burst of creates): build one now
            link = self._build_link(view.session_id)
        try:
            attachment = Attachment(self, view, sink, link, upstream)
        except BaseException:
            link.close()
            with self._alock:
                self._used.discard(link.index)
            raise
        with self._alock:
            self._by_addr[link.address] = attachment
        return attachment

    def _build_link(self, label: str) -> SessionLink:
        index = self._allocate()
        try:
            return SessionLink(self.slot, index, f"bst-{label}")
        except OSError as exc:
            with self._alock:
                self._used.discard(index)
            raise SandboxUnavailable(f"cannot give session {label} its network: {exc}") from exc
        except BaseException:
            with self._alock:
                self._used.discard(index)
            raise

    def detach(self, attachment: Attachment) -> None:
        with self._alock:
            if self._by_addr.get(attachment.address) is attachment:
                del self._by_addr[attachment.address]
                self._used.discard(attachment.link.index)

    def _allocate(self) -> int:
        """The next unused link index, round-robin: a just-closed session's veth may
        still be in the kernel's slow destruction, so its name and address are not
        handed out again until the whole range has gone round."""
        with self._alock:
            for _ in range(SLOT_SIZE):
                index = self._next_index
                self._next_index = (self._next_index + 1) % SLOT_SIZE
                if index not in self._used:
                    self._used.add(index)
                    return index
        raise SandboxUnavailable("no free session address in this gateway slot")

    def attachments(self) -> list[Attachment]:
        with self._alock:
            return list(self._by_addr.values())

    def trust_bundle(self) -> Path:
        """A world-readable file holding the system's CA bundle and this process's
        interception CA (never its key), for sandboxes whose TLS is inspected."""
        with self._bundle_lock:
            if self._bundle is None:
                directory = Path(tempfile.mkdtemp(prefix="bst-trust-"))
                directory.chmod(0o755)
                path = directory / "ca-bundle.pem"
                path.write_text(bundle_text(authority().pem))
                path.chmod(0o644)
                self._bundle = path
                atexit.register(_remove_bundle, path)
            return self._bundle

    def statistics(self) -> GatewayStatistics:
        return GatewayStatistics(**self._stats, sessions=len(self._by_addr))

    # -- loop -------------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._loop.add_reader(self._tcp.fileno(), self._on_acceptable)
        await self._loop.create_datagram_endpoint(lambda: _DnsProtocol(self), sock=self._udp)

    def _on_acceptable(self) -> None:
        """Accept every waiting connection (a reader callback: no future per accept)."""
        for _ in range(64):
            try:
                client, _ = self._tcp.accept()
            except BlockingIOError:
                return
            except OSError:
                if self._stopped:
                    return
                # EMFILE and friends: back off, keep serving
                fd = self._tcp.fileno()
                self._loop.remove_reader(fd)
                self._loop.call_later(0.01, self._loop.add_reader, fd, self._on_acceptable)
                return
            task = self._loop.create_task(self._on_client(client))
            task.add_done_callback(_log_failure)

    def stop(self) -> None:
        """Stop serving and remove the host table (sessions must be closed first)."""
        if self._stopped:
            return
        self._stopped = True
        self._pool.close()
        for attachment in self.attachments():
            attachment.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._teardown()

    def _teardown(self) -> None:
        self._stopped = True
        for sock in (getattr(self, "_tcp", None), getattr(self, "_udp", None)):
            if sock is not None:
                sock.close()
        with contextlib.suppress(OSError):
            nft().run(f"delete table ip {self.slot.table}")
        self._events.shutdown(wait=False)
        self.slot.release()

    # -- TCP --------------------------------------------------------------------------

    async def _on_client(self, sock: socket.socket) -> None:
        self._stats["accepted"] += 1
        sock.setblocking(False)
        try:
            relayed = await self._handle(sock)
        except OSError:
            relayed = False  # the client went away mid-handshake: nothing to decide
        except Exception:
            log.exception("gateway: connection handler failed; connection refused")
            relayed = False
        if not relayed:
            _reset(sock)

    async def _handle(self, sock: socket.socket) -> bool:
        """Classify, decide, report and (if allowed) relay one connection. Returns
        whether the socket now belongs to a relay; if not, the caller resets it."""
        loop = self._loop
        src_ip, src_port = sock.getpeername()[:2]
        attachment = self._by_addr.get(src_ip)
        if attachment is None or attachment.closed:
            self._stats["unknown_source"] += 1
            return False
        dst_ip, dst_port = _original_dst(sock)
        resolved = attachment.names.get(dst_ip)
        conn_id = new_id("conn")
        # a destination nothing could make reachable is refused whatever comes: it is
        # recorded even if the client never speaks and the session closes at once
        refused = reachable(attachment.policy, attachment.phase, dst_ip, dst_port,
                            host_addresses=self.host_addresses, resolved_name=resolved)
        key = sock.fileno()
        # who holds the socket is asked at once, while its process surely still exists
        # (a probe's process may be gone by the time the peek ends), and on the loop:
        # one netlink round trip and the fds of the call's newest process cost less
        # than a hop to a thread and back. Remembered per connection.
        with contextlib.suppress(Exception):  # failed: asked again when submitted
            attachment.owners.lookup({"net.src_ip": src_ip, "net.src_port": src_port,
                                      "net.dst_ip": dst_ip, "net.dst_port": dst_port})
        attachment.pending[key] = _connect_fields(
            conn_id, src_ip, src_port, dst_ip, dst_port, Sniff("unknown", error="no data"),
            refused or Decision(False, "gateway.session_closed",
                                "the session closed before the client was classified"),
            attachment.upstream)
        try:
            data, sniff = await self._peek(attachment, sock, dst_ip, dst_port, resolved,
                                           probe=refused is not None)
        finally:
            recorded = attachment.pending.pop(key, None) is None
        if recorded:  # the session closed meanwhile and already recorded it
            return False

        def judge(sniff: Sniff) -> Decision:
            if refused is not None:
                # denied whatever it said; what it said names the rule where it is
                # telling (a miner, a proxy handshake)
                decision = decide(attachment.policy, attachment.phase, dst_ip, dst_port,
                                  sniff, host_addresses=self.host_addresses,
                                  resolved_name=resolved)
                return refused if decision.allow or decision.rule in _PLAIN_DENIALS \
                    else decision
            if sniff.app == "silent":
                return Decision(False, "gateway.silent_client",
                                f"the client sent nothing for {HOLD_TIMEOUT:.0f}s and "
                                "no entry allows 'protocol: any' here")
            return decide(attachment.policy, attachment.phase, dst_ip, dst_port, sniff,
                          host_addresses=self.host_addresses, resolved_name=resolved)

        decision = judge(sniff)
        if not decision.allow and data and _inconclusive(sniff):
            # refused on a stream that had not yet said what it is (a client dripping
            # its first bytes): it is followed while it keeps talking, so a miner or a
            # proxy handshake that took its time is named (and judged) as one
            attachment.pending[key] = _connect_fields(conn_id, src_ip, src_port, dst_ip,
                                                      dst_port, sniff, decision,
                                                      attachment.upstream)
            try:
                data, sniff = await self._follow(sock, data, sniff)
            finally:
                recorded = attachment.pending.pop(key, None) is None
            if recorded:  # the session closed meanwhile and recorded what it had said
                return False
            decision = judge(sniff)
        if sniff.error:
            self._stats["malformed"] += 1
        dial_ip = decision.dial_ip
        if decision.allow and decision.dial_host is not None:
            decision, dial_ip = await self._resolve_dial(attachment, decision)
        fields = _connect_fields(conn_id, src_ip, src_port, dst_ip, dst_port, sniff, decision,
                                 attachment.upstream)
        entry = _entry(attachment.policy, decision.rule) if decision.allow else None
        inspect = (sniff.app == "tls" and entry is not None
                   and entry.inspected(attachment.policy.tls_inspect))
        if inspect:
            fields["net.tls_inspect"] = True
        # decided on the session's executor; this loop only awaits the verdicts. The
        # same connect (same holder, destination, classification, decision) judged with
        # no verdict moments ago under the same stamp is decided here: the rules see
        # event fields only, so they would say the same; it is still submitted (and
        # recorded, and seen by the stateful detectors), and cut if that says stop
        key = (attachment.judged_key(fields)
               if decision.allow and dial_ip and sniff.app in _REMEMBERED else None)
        late: Future[list[Verdict]] | None = None
        if key is not None and attachment.remember and attachment.was_cleared(key):
            try:
                late = attachment.submit(EventKind.NET_CONNECT, fields)
                verdicts: list[Verdict] | None = []
                attachment.remembered.append(conn_id)
                self._stats["remembered"] += 1
            except Exception:  # noqa: BLE001 - could not even submit: refused
                verdicts = None
        else:
            stamp = attachment._stamp()
            verdicts = await attachment.decide(EventKind.NET_CONNECT, fields)
            if verdicts:
                attachment.forget_judged()
            elif verdicts is not None and key is not None:
                attachment.clear(key, stamp)
        if decision.allow and (verdicts is None or any(v.action in _STOP for v in verdicts)):
            decision = Decision(False, "gateway.verdict",
                                "refused by a rule" if verdicts else "the session is ending")
        if not decision.allow or attachment.closed or dial_ip is None:
            self._stats["denied"] += 1
            if sniff.app == "http":
                with contextlib.suppress(OSError):
                    await asyncio.wait_for(loop.sock_sendall(sock, _forbidden(decision)), 1.0)
                    sock.shutdown(socket.SHUT_WR)
                    sock.close()
                    return True
            return False
        try:
            upstream = await attachment.upstream.connect(dial_ip, dst_port)
        except (TimeoutError, OSError) as exc:
            # an allowed destination that refused or never answered: a probe of a port
            # nobody serves (a sweep over an allowed host counts these, not denials)
            closing = {**fields, "net.error": f"upstream connect failed: {exc}",
                       "net.upstream_failed": True,
                       "net.bytes_out": 0, "net.bytes_in": 0, "net.duration": 0.0}
            attachment.emit(EventKind.NET_CLOSE, closing)
            return False
        self._stats["allowed"] += 1
        sock.setblocking(True)
        upstream.setblocking(True)
        conn = _Conn(conn_id, attachment, sock, upstream, fields, sniff, (dst_ip, dst_port))
        conn.dialled = decision.dial_host
        conn.allowed_protocol = _entry_protocol(attachment.policy, decision.rule)
        attachment.conns.add(conn)
        if attachment.closed:
            conn.cut()
        if inspect:
            self._relays.submit(self._intercept, conn, data)
        else:
            self._start_relay(conn, data)
        if late is not None:
            late.add_done_callback(lambda future: _late_verdicts(attachment, conn, future))
        return True

    async def _peek(self, attachment: Attachment, sock: socket.socket, dst_ip: str,
                    dst_port: int, resolved: str | None, *, probe: bool) -> tuple[bytes, Sniff]:
        """Read until the first bytes classify the connection. A client that says
        nothing is *held* (it might be waiting out the classifier) until it speaks or
        ``HOLD_TIMEOUT`` passes (then ``app="silent"``), unless an entry allows any
        protocol to this destination. A probe (refused whatever it says) is read only
        briefly, for the record. Whatever was read is also scanned for miners, SSH and
        proxy handshakes anywhere in it, not only at its start."""
        loop = self._loop
        data = b""
        sniff: Sniff | None = None
        start = time.monotonic()
        deadline = start + (PROBE_PEEK if probe else PEEK_TIMEOUT)
        while sniff is None:
            remaining = deadline - time.monotonic()
            chunk = b""
            if remaining > 0:
                try:
                    got = await _recv(loop, sock, MAX_PEEK - len(data), remaining)
                except OSError:  # reset by the client: decide on what it sent
                    got = b""
                if got is None:
                    remaining = 0
                else:
                    chunk = got
            if remaining <= 0 and not data and not probe:
                if silent_allowed(attachment.policy, attachment.phase, dst_ip, dst_port,
                                  resolved_name=resolved):
                    return data, Sniff("unknown", error="no data")
                if attachment.closed:
                    return data, Sniff("silent")
                hold = start + HOLD_TIMEOUT - time.monotonic()
                try:
                    got = await _recv(loop, sock, MAX_PEEK, hold) if hold > 0 else None
                except OSError:
                    got = b""
                if got is None:
                    return data, Sniff("silent")
                # it spoke at last: classify it like any other client from here on
                deadline = time.monotonic() + PEEK_TIMEOUT
                chunk, remaining = got, deadline - time.monotonic()
            final = remaining <= 0 or not chunk or len(data) + len(chunk) >= MAX_PEEK
            data += chunk
            sniff = classify(data, final=final)
        if sniff.app != "tls" and data:
            found = scan(data)
            if found is not None:
                sniff = _sniff_of(found, sniff)
        return data, sniff

    async def _follow(self, sock: socket.socket, data: bytes,
                      sniff: Sniff) -> tuple[bytes, Sniff]:
        """Keep reading a refused client that has not said what it is, while it keeps
        talking (a gap of ``DRIP_GAP`` ends it) for up to ``DRIP_WINDOW`` seconds and
        ``DRIP_BYTES``: the stream judged over time, not only its first bytes. Returns
        everything read and what it shows (a scan finding overrides)."""
        loop = self._loop
        deadline = time.monotonic() + DRIP_WINDOW
        while len(data) < DRIP_BYTES:
            wait = min(DRIP_GAP, deadline - time.monotonic())
            if wait <= 0:
                break
            try:
                got = await _recv(loop, sock, DRIP_BYTES - len(data), wait)
            except OSError:
                break
            if not got:  # silent for a gap, or closed: nothing more is coming now
                break
            data += got
            found = scan(data)
            if found is not None:
                return data, _sniff_of(found, classify(data, final=True) or sniff)
            again = classify(data, final=False)
            if again is not None and not _inconclusive(again):
                return data, again
        return data, classify(data, final=True) or sniff

    async def _resolve_dial(self, attachment: Attachment,
                            decision: Decision) -> tuple[Decision, str | None]:
        assert decision.dial_host is not None
        parent, sub = parent_of(decision.dial_host, attachment.wildcards())
        over, volume = attachment.exfil.exceeds(parent, sub)
        if over:
            return Decision(False, "gateway.dns_exfil",
                            f"{decision.dial_host}: {volume} bytes of new names under "
                            f"{parent} within a minute (budget "
                            f"{attachment.exfil.budget})"), None
        attachment.exfil.charge(parent, sub)
        try:
            addresses = await attachment.upstream.resolve(decision.dial_host)
        except (TimeoutError, OSError, ValueError) as exc:
            return Decision(False, "gateway.resolve_failed",
                            f"could not resolve {decision.dial_host}: {exc}"), None
        for address in addresses:
            denied = always_denied(ipaddress.ip_address(address), self.host_addresses,
                                   attachment.policy.allow_private)
            if denied is None:
                return decision, address
        return Decision(False, "gateway.resolved_denied",
                        f"{decision.dial_host} resolves to no reachable address"), None

    # -- relay ------------------------------------------------------------------------

    def _closer(self, conn: _Conn) -> Callable[[], None]:
        """What each relay direction calls when it ends: the second call closes the
        sockets and reports the connection's close."""
        def finish() -> None:
            conn.done += 1
            if conn.done < 2:
                return
            conn.closed = True
            conn.attachment.conns.discard(conn)
            for sock in (conn.client, conn.server):
                sock.close()
            summary = conn.summary()
            if conn.attachment.owners.known(summary):
                # its holder was found at connect: no /proc to read, reported from here
                with contextlib.suppress(BastionError):  # the session is gone: no one to tell
                    conn.attachment.emit(EventKind.NET_CLOSE, summary)
                return
            with contextlib.suppress(RuntimeError):  # the gateway stopped: nothing to tell
                self._events.submit(conn.attachment.emit, EventKind.NET_CLOSE, summary)

        lock = threading.Lock()

        def done() -> None:
            with lock:
                finish()

        return done

    def _start_relay(self, conn: _Conn, first: bytes) -> None:
        done = self._closer(conn)
        stop = _stopper(conn)
        app = conn.sniff.app
        # sandbox -> server: every byte of a clear-text stream is inspected before it is
        # forwarded; server -> sandbox: spliced for TLS and HTTP (what a server answers
        # cannot make an allowed request forbidden), inspected for everything else in
        # clear; TLS and (explicitly allowed) SSH are encrypted: their shape is watched
        outbound: Inspector | None = None
        if app not in ("tls", "ssh"):  # encrypted: its shape is watched instead
            outbound = Inspector(http=app == "http", judge=self._judge(conn),
                                 classify_first=not first, first_is_request=bool(first))
        inbound = Inspector() if app not in ("tls", "http", "ssh") else None
        leaks = (conn.attachment.leaks(conn.dialled or conn.sniff.host)
                 if outbound is not None else None)
        try:
            if first:
                found = _leaked(leaks, first)
                if found is None and outbound is not None:
                    found = outbound.feed(first)
                if found is not None:
                    stop(found)
                else:
                    conn.server.sendall(first)
                    conn.bytes[0] += len(first)
        except OSError:
            conn.cut()
        for src, dst, index, inspector in ((conn.client, conn.server, 0, outbound),
                                           (conn.server, conn.client, 1, inbound)):
            if inspector is None:
                self._relays.submit(_pump, src, dst, conn.bytes, index, done, conn.burst)
            else:
                self._relays.submit(_inspect_pump, src, dst, conn.bytes, index, inspector,
                                    stop, done, conn.burst, leaks if index == 0 else None)

    def _intercept(self, conn: _Conn, first: bytes) -> None:
        """Terminate an allowed TLS connection (``intercept.py``): the sandbox's
        handshake against a leaf for its SNI first (a client that refuses it gets
        nothing dialled with TLS, and the refusal is recorded), then the real server,
        verified; then both directions relayed through the inspectors, one here."""
        done = self._closer(conn)
        name = conn.sniff.sni or conn.dst[0]
        server_name = conn.dialled or conn.sniff.sni or conn.dst[0]

        def refuse(rule: str, reason: str) -> None:
            conn.fields.update({"net.decision": "deny", "net.rule": rule, "net.reason": reason,
                                "net.cut": f"{rule}: {reason}"})
            conn.cut()
            done()
            done()

        try:
            client = TlsPipe(conn.client, authority().server_context(name), server_side=True,
                             first=first)
            client.handshake(HANDSHAKE_TIMEOUT)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            refuse("gateway.tls_untrusted",
                   f"the client did not complete TLS with the gateway's certificate for "
                   f"{name} (it pins its own CA or certificate, or went away): {exc}")
            return
        try:
            server = TlsPipe(conn.server, conn.attachment.upstream_tls(), server_side=False,
                             server_hostname=server_name)
            server.handshake(HANDSHAKE_TIMEOUT)
        except (OSError, ValueError) as exc:
            refuse("gateway.tls_upstream_unverified",
                   f"the server for {server_name} failed TLS verification: {exc}")
            return
        outbound = LazyInspector(self._inspected_judge(conn))
        inbound = InboundInspector(outbound)
        stop = _stopper(conn)
        leaks = conn.attachment.leaks(server_name)
        self._relays.submit(_tls_pump, client, server, conn.bytes, 0, outbound, stop, done,
                            leaks)
        _tls_pump(server, client, conn.bytes, 1, inbound, stop, done)

    def _inspected_judge(self, conn: _Conn) -> Callable[[Sniff], Finding | None]:
        """Each request inside an intercepted TLS connection, the first one included:
        its Host must be an allowed name and the name the connection was made for."""
        expected = conn.dialled or conn.sniff.sni

        def judge(sniff: Sniff) -> Finding | None:
            if sniff.host is None or expected is None:
                return None  # HTTP/1.0 without Host: the server serves the SNI's name
            attachment = conn.attachment
            extra = {"net.host": sniff.host, "net.path": (sniff.path or "")[:255]}
            again = decide(attachment.policy, attachment.phase, conn.dst[0], conn.dst[1],
                           Sniff("tls", sni=sniff.host), host_addresses=self.host_addresses)
            if not again.allow:
                return Finding("http", again.rule, f"request inside TLS: {again.reason}",
                               extra)
            if sniff.host != expected:
                return Finding("http", "gateway.host_changed",
                               f"request for {sniff.host} inside TLS made for {expected}",
                               extra)
            return None
        return judge

    def _judge(self, conn: _Conn) -> Callable[[Sniff], Finding | None]:
        """Each later request of a kept-alive HTTP connection, decided like a first one
        and bound to the name the gateway dialled."""
        def judge(sniff: Sniff) -> Finding | None:
            attachment = conn.attachment
            again = decide(attachment.policy, attachment.phase, conn.dst[0], conn.dst[1],
                           sniff, host_addresses=self.host_addresses,
                           resolved_name=attachment.names.get(conn.dst[0]))
            extra = {"net.host": sniff.host or "", "net.path": (sniff.path or "")[:255]}
            if not again.allow:
                return Finding("http", again.rule, f"kept-alive request: {again.reason}", extra)
            if conn.dialled is not None and sniff.host != conn.dialled:
                return Finding("http", "gateway.host_changed",
                               f"request for {sniff.host} on a connection dialled to "
                               f"{conn.dialled}", extra)
            return None
        return judge

    # -- DNS --------------------------------------------------------------------------

    async def answer_dns(self, data: bytes, addr: tuple[str, int],
                         send: Callable[[bytes, tuple[str, int]], None]) -> None:
        attachment = self._by_addr.get(addr[0])
        if attachment is None or attachment.closed:
            self._stats["unknown_source"] += 1
            return
        self._stats["dns_queries"] += 1
        query = parse_query(data)
        if query is None:
            self._stats["malformed"] += 1
            attachment.emit(
                EventKind.DNS_QUERY,
                {"dns.name": "", "dns.type": "", "dns.answer": [], "dns.decision": "deny",
                 "dns.rcode": "FORMERR", "net.src_ip": addr[0], "net.reason": "malformed query"})
            return
        policy = attachment.policy
        phase = policy.phases.get(attachment.phase)
        allowed = (policy.dns == "allowlist" and phase is not None
                   and domain_allowed(phase.allow, query.name))
        parent, sub = parent_of(query.name, attachment.wildcards())
        over, volume = attachment.exfil.exceeds(parent, sub)
        score = max(attachment.meter.score(query.name, query.qtype),
                    round(min(1.0, volume / attachment.exfil.budget), 3))
        rule = "dns.allowlist" if allowed else "dns.not_allowed"
        rcode = "NXDOMAIN"
        if allowed and query.qtype not in policy.allowed_qtypes():
            allowed, rule, rcode = False, "gateway.dns_qtype", "REFUSED"
        elif allowed and over:
            allowed, rule, rcode = False, "gateway.dns_exfil", "REFUSED"
        leak = attachment.secret_in(query.name.replace(".", "").encode("ascii", "replace"))
        if leak is not None:
            # a name that spells one of the workspace's secrets: refused, and judged
            allowed, rule, rcode = False, "gateway.secret_egress", "REFUSED"
        elif not allowed:
            # refused names carry nothing out, but a stream of new labels under one
            # parent is an attempt to, and is reported as one
            tried = attachment.attempts.charge(parent, sub)
            if tried * 2 > attachment.attempts.budget:
                rule, volume = "gateway.dns_exfil_attempt", tried
                score = max(score, round(min(1.0, tried / attachment.attempts.budget), 3))
        fields: dict[str, Any] = {
            "dns.name": query.name, "dns.type": query.qtype, "dns.answer": [],
            "dns.decision": "allow" if allowed else "deny", "dns.rcode": rcode,
            "dns.rule": rule, "dns.tunnel_score": score, "dns.parent": parent,
            "dns.volume": volume, "net.proto": "udp", "net.src_ip": addr[0],
            "net.src_port": addr[1]}
        if leak is not None:
            fields.update({"dns.secret_source": leak.source, "dns.secret_encoding": leak.encoding})
        if not allowed:
            self._stats["dns_denied"] += 1
            # refused here: nothing leaves, and nobody waits for the verdicts
            await asyncio.to_thread(attachment.emit, EventKind.DNS_QUERY, fields)
            send(refusal(query, rcode=_RCODES[rcode]), addr)
            return
        # suspicious: held, recorded and judged before anything leaves
        held = score >= 0.5 or volume * 2 > attachment.exfil.budget
        if held:
            fields["dns.held"] = True
            verdicts = await attachment.decide(EventKind.DNS_QUERY, fields)
            if verdicts is None or any(v.action in _STOP for v in verdicts):
                send(refusal(query, rcode=5), addr)
                return
        attachment.exfil.charge(parent, sub)
        answers: list[str] = []
        try:
            reply = restore(await attachment.upstream.exchange(clean_query(query)), query)
            answers = answers_of(reply)
            fields["dns.rcode"] = "NOERROR" if answers else "NODATA"
        except (TimeoutError, OSError):
            reply = refusal(query, rcode=2)  # SERVFAIL
            fields["dns.rcode"] = "SERVFAIL"
        fields["dns.answer"] = answers
        if not held:
            verdicts = await attachment.decide(EventKind.DNS_QUERY, fields)
            if verdicts is None or any(v.action in _STOP for v in verdicts):
                reply, answers = refusal(query), []
        for answer in answers:
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(answer)
                attachment.names[answer] = query.name
        send(reply, addr)

    # -- poller -----------------------------------------------------------------------

    def _poll(self) -> None:
        last_refresh = last_drops = time.monotonic()
        while not self._stopped:
            time.sleep(POLL_INTERVAL)
            now = time.monotonic()
            if now - last_refresh > 5:
                try:
                    self.host_addresses = _host_addresses()
                except Exception:  # keep the last known set: it only ever grows stale
                    log.exception("gateway: could not refresh the host's addresses")
                last_refresh = now
            drops_due = now - last_drops >= DROP_POLL_INTERVAL
            if drops_due:
                last_drops = now
            for attachment in self.attachments():
                if drops_due:
                    try:
                        self.poll_drops(attachment)
                    except Exception as exc:  # noqa: BLE001 - reported as telemetry, not dropped
                        if not attachment.closed:  # a closing session's namespace may be gone
                            attachment.emit(EventKind.TELEMETRY, {
                                "telemetry.sensor": "gateway.drops",
                                "telemetry.reason": f"cannot read drop counters: {exc}"})
                for conn in list(attachment.conns):
                    if not conn.closed and now - conn.last_flow >= FLOW_INTERVAL:
                        conn.last_flow = now
                        _cut_on_stop(attachment, conn)

    def poll_drops(self, attachment: Attachment) -> None:
        """Turn new firewall drops of one session into ``net.drop`` events: one per new
        destination (address, protocol, port: what a probe went for), charged to the
        socket's owner while it exists, else to the session's latest call; and one per
        counter that grew, with packet and byte counts (IPv6 drops and a full set are
        seen only there)."""
        counters = attachment.link.drop_counters()
        grown = {}
        for name in DROP_COUNTERS:
            packets, size = counters.get(name, (0, 0))
            old_packets, old_size = attachment.drops.get(name, (0, 0))
            if packets > old_packets:
                attachment.drops[name] = (packets, size)
                grown[name] = (packets - old_packets, size - old_size)
        if not grown:
            return
        for dst_ip, proto, dst_port, src_port in attachment.link.dropped():
            if (dst_ip, proto, dst_port, src_port) in attachment.dropped:
                continue
            attachment.dropped.add((dst_ip, proto, dst_port, src_port))
            fields: dict[str, Any] = {
                "net.proto": proto, "net.dst_ip": dst_ip, "net.src_ip": attachment.address,
                "net.decision": "deny", "net.rule": f"firewall.drop_{proto}"
                if f"drop_{proto}" in DROP_COUNTERS else "firewall.drop_other"}
            if dst_port or src_port:
                fields["net.dst_port"] = dst_port
                fields["net.src_port"] = src_port
            attachment.emit(EventKind.NET_DROP, fields)
        for name, (packets, size) in grown.items():
            attachment.emit(EventKind.NET_DROP, {
                "net.proto": name.removeprefix("drop_"),
                "net.packets": packets,
                "net.bytes_out": size,
                "net.src_ip": attachment.address,
                "net.decision": "deny",
                "net.rule": f"firewall.{name}",
            })


class _Workers:
    """Threads for blocking relays: reused when idle (starting a thread costs more than
    a small request), never capped (a long-lived tunnel must not starve new
    connections), and gone after a minute of idleness."""

    IDLE = 60.0

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = \
            queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._queue.put((fn, args))
        if spawn:
            threading.Thread(target=self._work, daemon=True, name=self._name).start()

    def _work(self) -> None:
        while True:
            try:
                fn, args = self._queue.get(timeout=self.IDLE)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0 and self._queue.empty():
                        self._idle -= 1
                        return
                continue
            try:
                fn(*args)
            except Exception:
                log.exception("gateway: relay worker failed")
            with self._lock:
                self._idle += 1


class _DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        task = asyncio.ensure_future(self.gateway.answer_dns(data, addr, self.transport.sendto))
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("gateway: DNS handler failed", exc_info=task.exception())


# -- helpers --------------------------------------------------------------------------


def _entry(policy: NetworkPolicy, rule: str) -> AllowEntry | None:
    """The entry an ``allow[phase][index]`` rule names (None: not an allow rule)."""
    if not rule.startswith("allow["):
        return None
    phase, _, index = rule.removeprefix("allow[").rstrip("]").partition("][")
    entries = policy.phases.get(phase)
    if entries is None or not index.isdigit() or int(index) >= len(entries.allow):
        return None
    return entries.allow[int(index)]


def _entry_protocol(policy: NetworkPolicy, rule: str) -> str | None:
    """The protocol an ``allow[phase][index]`` rule's entry names (None: the default)."""
    entry = _entry(policy, rule)
    return entry.protocol if entry is not None else None


def _remove_bundle(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
        path.parent.rmdir()


def _stopper(conn: _Conn) -> Callable[[Finding], None]:
    """What a relay calls when its inspector finds a forbidden protocol: cut the
    connection and report the finding (a verdict is charged to the call)."""
    def stop(found: Finding) -> None:
        conn.fields.update(found.fields)
        report = {**conn.summary(), **found.fields, "net.app": found.app,
                  "net.decision": "deny", "net.rule": found.rule,
                  "net.reason": found.reason, "net.cut": f"{found.rule}: {found.reason}"}
        conn.fields["net.cut"] = report["net.cut"]
        conn.cut()
        with contextlib.suppress(Exception):
            conn.attachment.emit(EventKind.NET_FLOW, report)
    return stop


# a refusal that says only "not allowed here": a probe's reason is then its address
_PLAIN_DENIALS = frozenset({"gateway.default_deny"})


def _inconclusive(sniff: Sniff) -> bool:
    """A classification that more bytes could still change: nothing recognised yet, or
    JSON / an HTTP head cut short."""
    return sniff.app == "unknown" or (sniff.app in ("json-rpc", "http")
                                      and sniff.error is not None
                                      and " at first: " not in sniff.error)


def _sniff_of(found: Finding, first: Sniff) -> Sniff:
    """The classification a stream finding overrides the first-bytes one with."""
    return Sniff(found.app, host=found.fields.get("net.host", first.host),
                 method=found.fields.get("net.method", first.method),
                 path=found.fields.get("net.path", first.path),
                 ssh_banner=found.fields.get("net.ssh_banner"),
                 stratum_method=found.fields.get("net.stratum_method"),
                 error=f"{first.app} at first: {found.reason}")


def _late_verdicts(attachment: Attachment, conn: _Conn,
                   future: Future[list[Verdict]]) -> None:
    """The verdicts on a connect decided from a remembered judgement: any verdict voids
    what is remembered; a stop (or a failure to judge it) cuts the connection."""
    failed = future.exception() is not None
    verdicts = [] if failed else future.result()
    if failed or verdicts:
        attachment.forget_judged()
    if failed or any(v.action in _STOP for v in verdicts):
        conn.fields["net.cut"] = "refused by a rule after a remembered judgement"
        conn.cut()


def _cut_on_stop(attachment: Attachment, conn: _Conn) -> None:
    """Report a live connection; cut it if its verdicts say stop (or the session could
    not take the report). The poller never waits for a session's pipeline."""
    def check(future: Future[list[Verdict]]) -> None:
        if future.exception() is not None or any(v.action in _STOP for v in future.result()):
            conn.cut()

    try:
        attachment.submit(EventKind.NET_FLOW, conn.summary()).add_done_callback(check)
    except Exception:  # noqa: BLE001 - cannot even report it: fail closed
        conn.cut()


class _SplicePipe:
    """A relay thread's splice pipe, kept between connections (closed with the thread's
    locals when an idle worker ends)."""

    __slots__ = ("read_end", "write_end")

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            import fcntl
            fcntl.fcntl(self.write_end, 1031, _SPLICE_CHUNK)  # F_SETPIPE_SZ

    def close(self) -> None:
        for fd in (self.read_end, self.write_end):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.read_end = self.write_end = -1

    def __del__(self) -> None:
        if self.read_end >= 0:
            self.close()


_pipes = threading.local()


def _pipe() -> _SplicePipe:
    """This relay thread's splice pipe (empty: a pump that may have left bytes in it
    closes it instead of giving it back), made once per thread, not per connection."""
    pipe: _SplicePipe | None = getattr(_pipes, "pipe", None)
    if pipe is not None:
        _pipes.pipe = None
        return pipe
    return _SplicePipe()


def _pump(src: socket.socket, dst: socket.socket, counts: list[int], index: int,
          done: Callable[[], None], burst: Callable[[int, int], None] | None = None) -> None:
    """Copy src -> dst in the kernel (splice through a pipe) until EOF or error."""
    pipe = _pipe()
    read_end, write_end = pipe.read_end, pipe.write_end
    empty = False
    try:
        while True:
            moved = os.splice(src.fileno(), write_end, _SPLICE_CHUNK, flags=1)  # MOVE
            if moved == 0:
                empty = True
                break
            counts[index] += moved
            if burst is not None:
                burst(index, moved)
            while moved:
                moved -= os.splice(read_end, dst.fileno(), moved, flags=1)
    except OSError:
        pass  # a reset or a cut: the other direction is shut down below
    finally:
        if empty and getattr(_pipes, "pipe", None) is None:
            _pipes.pipe = pipe
        else:
            pipe.close()
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        done()


def _leaked(leaks: StreamLeaks | None, data: bytes | memoryview) -> Finding | None:
    """A finding when ``data`` carries one of the workspace's secrets (the relay then
    cuts the connection before the read that shows it is sent)."""
    leak = leaks.feed(data) if leaks is not None else None
    if leak is None:
        return None
    return Finding("secret", "gateway.secret_egress",
                   f"the content of the workspace's {leak.source} ({leak.encoding}) in what "
                   "the sandbox sent", {"net.secret_source": leak.source,
                                        "net.secret_encoding": leak.encoding})


def _inspect_pump(src: socket.socket, dst: socket.socket, counts: list[int], index: int,
                  inspector: Inspector, stop: Callable[[Finding], None],
                  done: Callable[[], None],
                  burst: Callable[[int, int], None] | None = None,
                  leaks: StreamLeaks | None = None) -> None:
    """Copy src -> dst through user space, each chunk inspected before it is sent; the
    chunk that shows a forbidden protocol is not sent and the connection is cut.

    (Moving the bytes in the kernel and reading a tee(2) copy to inspect was measured:
    within noise of this on TCP, slower on a socketpair; the scan is most of the cost.)"""
    # one buffer for the connection's life, read into and sent from through views: no
    # allocation per read (the inspector keeps nothing of a view past its feed). It
    # starts small (most connections move a request or two) and grows while reads fill it
    buffer = bytearray(_INSPECT_FIRST)
    view = memoryview(buffer)
    try:
        while True:
            n = src.recv_into(buffer)
            if not n:
                break
            data = view[:n]
            if n == len(buffer) and n < _INSPECT_CHUNK:
                data = bytes(data)  # the buffer is replaced below: keep this read
                buffer = bytearray(min(_INSPECT_CHUNK, n * 4))
                view = memoryview(buffer)
            found = _leaked(leaks, data) or inspector.feed(data)
            if found is not None:
                stop(found)
                break
            dst.sendall(data)
            counts[index] += n
            if burst is not None:
                burst(index, n)
    except OSError:
        pass  # a reset or a cut: the other direction is shut down below
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        done()


def _tls_pump(src: TlsPipe, dst: TlsPipe, counts: list[int], index: int,
              inspector: LazyInspector | InboundInspector,
              stop: Callable[[Finding], None], done: Callable[[], None],
              leaks: StreamLeaks | None = None) -> None:
    """One direction of an intercepted TLS connection: plaintext from ``src``, each
    read inspected before it is re-encrypted to ``dst``; the read that shows a forbidden
    protocol is not sent and the connection is cut."""
    buffer = bytearray(_INSPECT_FIRST)
    view = memoryview(buffer)
    try:
        while True:
            n = src.recv_into(buffer)
            if not n:
                break
            data = view[:n]
            found = _leaked(leaks, data)
            if found is not None:
                stop(found)
                break
            found = inspector.feed(data)
            if isinstance(inspector, LazyInspector):
                if found is None and inspector.undecided and not src.readable(SETTLE):
                    found = inspector.settle()
                data = inspector.take()
            if found is not None:
                stop(found)
                break
            if data:
                dst.sendall(data)
                counts[index] += len(data)
    except OSError:
        pass  # a reset or a cut: the other direction is shut down below
    finally:
        dst.close_write()
        done()


async def _recv(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int,
                timeout: float) -> bytes | None:
    """Up to ``size`` bytes, or None after ``timeout``. Tries the socket first: the
    client's first bytes have usually arrived by the time we look.

    Waits for readability and only then reads: a ``sock_recv`` cancelled by the timeout
    just after it had read loses those bytes (a dripping client's chunk vanished from
    the middle of its Host header), and what was read here is what gets relayed."""
    try:
        return sock.recv(size)
    except BlockingIOError:
        pass
    deadline = loop.time() + timeout
    fd = sock.fileno()
    while (left := deadline - loop.time()) > 0:
        ready = loop.create_future()
        loop.add_reader(fd, lambda ready=ready: ready.done() or ready.set_result(None))
        try:
            async with asyncio.timeout(left):
                await ready
        except TimeoutError:
            return None  # anything that arrives meanwhile stays in the socket, unread
        finally:
            loop.remove_reader(fd)
        try:
            return sock.recv(size)
        except BlockingIOError:  # woken without data: wait on
            continue
    return None


def _original_dst(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the client sees 'connection reset' at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _forbidden(decision: Decision) -> bytes:
    reason = decision.reason.replace("\r", " ").replace("\n", " ")
    body = f"bastion: connection refused ({decision.rule}): {reason}\n".encode()
    return (b"HTTP/1.1 403 Forbidden\r\n"
            b"X-Bastion-Decision: deny\r\n"
            + f"X-Bastion-Rule: {decision.rule}\r\n".encode()
            + f"X-Bastion-Reason: {reason}\r\n".encode("latin-1", "replace")
            + b"Content-Type: text/plain\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def _connect_fields(conn_id: str, src_ip: str, src_port: int, dst_ip: str, dst_port: int,
                    sniff: Sniff, decision: Decision, upstream: Upstream) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "net.conn_id": conn_id, "net.proto": "tcp", "net.src_ip": src_ip,
        "net.src_port": src_port, "net.dst_ip": dst_ip, "net.dst_port": dst_port,
        "net.app": sniff.app, "net.decision": decision.word, "net.rule": decision.rule,
        "net.reason": decision.reason, "net.upstream": upstream.label,
    }
    optional = {"net.sni": sniff.sni, "net.host": sniff.host, "net.method": sniff.method,
                "net.path": sniff.path, "net.ssh_banner": sniff.ssh_banner,
                "net.stratum_method": sniff.stratum_method, "net.error": sniff.error,
                "net.dialled": decision.dial_host}
    fields.update({k: v for k, v in optional.items() if v is not None})
    if sniff.alpn:
        fields["net.alpn"] = list(sniff.alpn)
    return fields


def _host_addresses() -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    with IPRoute() as ipr:
        found = set()
        for addr in ipr.get_addr():
            value = addr.get_attr("IFA_ADDRESS")
            if value:
                with contextlib.suppress(ValueError):
                    found.add(ipaddress.ip_address(value.split("%")[0]))
        return frozenset(found)
