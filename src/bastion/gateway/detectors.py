"""Stateful detectors over the gateway's events: what no single connection shows.

The gateway decides connections and DNS answers itself (policy enforcement); these
detectors turn the patterns across its events into verdicts the engine charges to a
call, whatever rule packs the policy loads:

* ``ReconDetector`` — ``recon.network_scan``: many distinct refused destinations
  (address, port) in a short window: denied connects, no-data connects, firewall drops.
  One verdict per sweep, charged to the call whose probe crossed the threshold.
* ``DnsExfilDetector`` — ``tunnels.dns_exfil``: the gateway refused lookups (or SNI/Host
  names) because new label bytes under one parent passed the budget: data was being
  moved through names (high). Refused names under one parent carrying half the budget
  are an attempt (medium: nothing left). One verdict per parent domain.
* ``StreamCutDetector`` — ``gateway.stream_cut``: a relayed connection was cut mid-stream
  for carrying a miner, an SSH exchange, a proxy handshake or a refused kept-alive
  request.
* ``ShapeDetector`` — ``tunnels.ssh_in_tls``: a TLS (or other non-SSH) connection whose
  bursts carry SSH's packet framing — an SSH session tunnelled through an allowed
  channel, directly or behind a ``CONNECT`` to a proxy on an allowed name;
  ``mining.stratum_in_tls``: a TLS connection carrying a miner's share/acknowledgement
  dialogue (``gateway.shape``). High: the default response kills the call, and the
  gateway cuts the connection on a stopping verdict (at once, if the client offered no
  ALPN).
* ``BeaconDetector`` — ``detector.beacon_jitter``: connections to one destination at a
  regular period even under jitter (median-based, so random delays of ±50% do not
  hide it). A beacon is periodic contact that carries data out: medium when the
  connections send more than a poll's request (``BEACON_DATA_OUT`` bytes each on
  average); periodic polling of a destination the allow list names that sends nothing
  more (an agent waiting for a deploy, at any load) is a low note, no penalty, and
  becomes medium if its connections start carrying data out.

Thresholds are module constants; each detector fires once per offender, keeps state
per session and forgets it when the session ends.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from typing import Any

from ..engine.finding import Finding
from ..events import Event, EventKind, Severity

__all__ = ["BeaconDetector", "DnsExfilDetector", "ReconDetector", "ShapeDetector",
           "StreamCutDetector", "network_detectors"]

RECON_DISTINCT = 20  # distinct refused destinations ...
RECON_WINDOW_NS = 60 * 1_000_000_000  # ... within a minute
RECON_REARM_NS = 600 * 1_000_000_000  # a new sweep verdict no sooner than this
# refusals that say "this destination is not reachable", i.e. what a probe gets
_PROBE_RULES = ("gateway.default_deny", "gateway.private", "gateway.metadata",
                "gateway.loopback", "gateway.link_local", "gateway.reserved",
                "gateway.host_address", "gateway.silent_client", "gateway.session_closed",
                "firewall.")
_STREAM_RULES = {"gateway.secret_egress": Severity.CRITICAL,
                 "gateway.miner_protocol": Severity.HIGH,
                 "gateway.ssh_in_stream": Severity.HIGH,
                 "gateway.proxy_protocol": Severity.HIGH}
BEACON_MIN = 12  # connections
BEACON_MIN_PERIOD = 2.0  # seconds
BEACON_MAX_SPREAD = 0.35  # median absolute deviation of the gaps / their median
# bytes sent per connection (per exchange on a kept-alive one), on average, past which
# periodic contact carries data out: a TLS poll sends ~0.5-1.5 KiB (handshake + request)
BEACON_DATA_OUT = 4096
SHAPE_MIN_SMALL = 40  # small bursts each way before a connection can look interactive
SHAPE_MIN_TURNS = 40


class ReconDetector:
    """Refused destinations counted per session: connects the gateway denied, firewall
    drops, and allowed connects whose destination refused them (or never answered,
    ``net.upstream_failed`` on the close): a port sweep over an allowed host — a curl
    URL glob over ports — is as much a sweep as one over denied addresses. A client
    retrying one closed port is one destination, not a sweep."""

    name = "recon_scan"
    kinds = frozenset({EventKind.NET_CONNECT, EventKind.NET_DROP, EventKind.NET_CLOSE})

    def __init__(self) -> None:
        self._seen: dict[str, deque[tuple[int, tuple[str, Any]]]] = {}
        self._fired: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, event: Event) -> list[Finding]:
        fields = event.fields
        ip = fields.get("net.dst_ip")
        if event.kind is EventKind.NET_CLOSE:
            if ip is None or fields.get("net.upstream_failed") is not True:
                return []
        else:
            rule = str(fields.get("net.rule") or "")
            if (fields.get("net.decision") != "deny" or ip is None
                    or not rule.startswith(_PROBE_RULES)):
                return []
        target = (str(ip), fields.get("net.dst_port"))
        now = event.ts
        with self._lock:
            last = self._fired.get(event.session_id)
            if last is not None and now - last < RECON_REARM_NS:
                return []
            window = self._seen.setdefault(event.session_id, deque())
            window.append((now, target))
            while window and now - window[0][0] > RECON_WINDOW_NS:
                window.popleft()
            distinct = {t for _, t in window}
            if len(distinct) < RECON_DISTINCT:
                return []
            self._fired[event.session_id] = now
            window.clear()
        hosts = sorted({t[0] for t in distinct})
        ports = sorted({t[1] for t in distinct if t[1] is not None})
        return [Finding(
            rule_id="recon.network_scan",
            severity=Severity.HIGH,
            message=(f"{len(distinct)} distinct refused destinations within "
                     f"{RECON_WINDOW_NS // 1_000_000_000}s ({len(hosts)} hosts, "
                     f"{len(ports)} ports): a network sweep"),
            categories=("recon",),
            mitre=("T1046", "T1018"),
            evidence={"destinations": len(distinct), "hosts": hosts[:20],
                      "ports": ports[:20]},
        )]

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._seen.pop(session_id, None)
            self._fired.pop(session_id, None)


class DnsExfilDetector:
    name = "dns_exfil"
    kinds = frozenset({EventKind.DNS_QUERY, EventKind.NET_CONNECT})

    def __init__(self) -> None:
        self._fired: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def observe(self, event: Event) -> list[Finding]:
        fields = event.fields
        attempt = False
        if event.kind is EventKind.DNS_QUERY:
            if fields.get("dns.rule") == "gateway.secret_egress":
                return self._secret(event)
            if fields.get("dns.rule") not in ("gateway.dns_exfil", "gateway.dns_exfil_attempt"):
                return []
            attempt = fields.get("dns.rule") == "gateway.dns_exfil_attempt"
            parent = str(fields.get("dns.parent") or "")
            name = str(fields.get("dns.name") or "")
        else:
            if fields.get("net.rule") != "gateway.dns_exfil":
                return []
            name = str(fields.get("net.sni") or fields.get("net.host") or "")
            parent = name.split(".", 1)[-1]
        with self._lock:
            if (event.session_id, parent) in self._fired:
                return []
            self._fired.add((event.session_id, parent))
        if attempt:
            message = (f"data pushed into refused DNS names under {parent}: "
                       f"{fields.get('dns.volume', '?')} bytes of new labels within a minute "
                       "(none left the gateway)")
        else:
            message = (f"data moved through DNS names under {parent}: "
                       f"{fields.get('dns.volume', '?')} bytes of new labels within a minute; "
                       "further lookups refused")
        return [Finding(
            rule_id="tunnels.dns_exfil",
            # an attempt moved nothing: an alert; data that left: stop the call
            severity=Severity.MEDIUM if attempt else Severity.HIGH,
            message=message,
            categories=("exfiltration", "tunnel"),
            mitre=("T1048.003", "T1071.004"),
            evidence={"parent": parent, "name": name[:255],
                      "volume": fields.get("dns.volume")},
        )]

    def _secret(self, event: Event) -> list[Finding]:
        """A name that spelled one of the workspace's secrets (refused by the gateway,
        gateway/leaks.py): one verdict per secret store per session."""
        fields = event.fields
        source = str(fields.get("dns.secret_source") or "")
        with self._lock:
            if (event.session_id, f"secret:{source}") in self._fired:
                return []
            self._fired.add((event.session_id, f"secret:{source}"))
        return [Finding(
            rule_id="gateway.secret_egress",
            severity=Severity.CRITICAL,
            message=(f"a secret from the workspace's {source} spelled in DNS names "
                     f"({fields.get('dns.secret_encoding')}): {fields.get('dns.name')} "
                     "(refused: it never left)"),
            categories=("exfiltration",),
            mitre=("T1048.003", "T1552.001"),
            evidence={"dns.name": str(fields.get("dns.name") or "")[:255],
                      "dns.secret_source": source},
        )]

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._fired = {k for k in self._fired if k[0] != session_id}


class StreamCutDetector:
    name = "stream_cut"
    kinds = frozenset({EventKind.NET_FLOW})

    def observe(self, event: Event) -> list[Finding]:
        fields = event.fields
        rule = fields.get("net.rule")
        if fields.get("net.decision") != "deny" or not fields.get("net.cut"):
            return []
        if rule in ("gateway.ssh_in_tls", "gateway.stratum_in_tls"):
            return []  # the shape detector's verdict says it
        severity = _STREAM_RULES.get(str(rule), Severity.MEDIUM)
        app = fields.get("net.app")
        # a tunnel's cut names the tunnels pack too: a relay reached through a CONNECT
        # (in clear or inside inspected TLS) is that pack's capability
        categories = {"stratum": ("mining",), "ssh": ("tunnel", "tunnels"),
                      "http-connect": ("tunnel", "tunnels"),
                      "secret": ("exfiltration",)}.get(str(app), ("policy",))
        return [Finding(
            rule_id="gateway.stream_cut",
            severity=severity,
            message=(f"connection to {fields.get('net.dst_ip')}:{fields.get('net.dst_port')} "
                     f"cut mid-stream: {fields.get('net.reason')}"),
            categories=categories,
            mitre={"stratum": ("T1496",), "secret": ("T1041", "T1552.001")}.get(
                str(app), ("T1572",)),
            evidence={"net.app": app, "net.rule": rule, "net.conn_id":
                      fields.get("net.conn_id")},
        )]

    def forget(self, session_id: str) -> None:
        return None


class ShapeDetector:
    """SSH framing or a miner's dialogue inside an allowed TLS (or other) channel. The
    weaker "interactive" shape (small bursts both ways) is only reported on the flow:
    websocket and chat clients have it too, and a false kill is as bad as a miss."""

    name = "traffic_shape"
    kinds = frozenset({EventKind.NET_FLOW, EventKind.NET_CLOSE})

    def __init__(self) -> None:
        self._fired: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def observe(self, event: Event) -> list[Finding]:
        fields = event.fields
        shape = fields.get("net.shape")
        if shape not in ("ssh", "stratum") or fields.get("net.app") in ("ssh", "http") \
                or (shape == "stratum" and fields.get("net.app") != "tls"):
            return []
        key = (event.session_id, str(fields.get("net.conn_id")))
        with self._lock:
            if key in self._fired:
                return []
            self._fired.add(key)
        where = fields.get("net.sni") or fields.get("net.host") or fields.get("net.dst_ip")
        if shape == "stratum":
            return [Finding(
                rule_id="mining.stratum_in_tls",
                severity=Severity.HIGH,
                message=(f"TLS connection to {where}:{fields.get('net.dst_port')} carries a "
                         f"miner's dialogue: {fields.get('net.shape_acked')} small requests in "
                         "a row, each answered by a tiny acknowledgement (submitted shares)"),
                categories=("mining",),
                mitre=("T1496",),
                evidence={k: fields.get(k) for k in ("net.conn_id", "net.shape_acked",
                                                     "net.shape_small_out",
                                                     "net.shape_small_in", "net.bytes_out")},
            )]
        return [Finding(
            rule_id="tunnels.ssh_in_tls",
            severity=Severity.HIGH,
            message=(f"{fields.get('net.app')} connection to {where}:{fields.get('net.dst_port')} "
                     f"carries SSH-framed packets ({fields.get('net.shape_small_out')} small "
                     f"bursts out, {fields.get('net.shape_small_in')} in): an SSH session "
                     "tunnelled through an allowed channel"),
            categories=("tunnel", "command_and_control"),
            mitre=("T1572",),
            evidence={k: fields.get(k) for k in ("net.conn_id", "net.shape_small_out",
                                                 "net.shape_small_in", "net.shape_turns",
                                                 "net.shape_server_first")},
        )]

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._fired = {k for k in self._fired if k[0] != session_id}


class BeaconDetector:
    """Periodic connections to one destination (jitter-robust), or periodic exchanges
    on one kept-alive connection (``net.shape_periodic`` of its flow reports)."""

    name = "beacon_jitter"
    kinds = frozenset({EventKind.NET_CONNECT, EventKind.NET_FLOW, EventKind.NET_CLOSE})

    def __init__(self) -> None:
        self._times: dict[tuple[str, str], deque[int]] = {}
        # key -> the severity it fired at (a low poll may still turn into a beacon)
        self._fired: dict[tuple[str, str], Severity] = {}
        self._period: dict[tuple[str, str], tuple[float, float, int]] = {}
        self._conns: dict[tuple[str, str], tuple[str, str]] = {}  # (session, conn) -> key
        self._out: dict[tuple[str, str], dict[str, int]] = {}  # key -> conn -> bytes out
        self._lock = threading.Lock()

    def observe(self, event: Event) -> list[Finding]:
        fields = event.fields
        if event.kind is not EventKind.NET_CONNECT:
            return self._data_out(event) + self._kept_alive(event)
        if fields.get("net.decision") != "allow":
            return []
        target = str(fields.get("net.sni") or fields.get("net.host") or fields.get("net.dst_ip"))
        target += f":{fields.get('net.dst_port')}"
        key = (event.session_id, target)
        with self._lock:
            conn = fields.get("net.conn_id")
            if conn is not None and len(self._conns) < 65536:
                self._conns[(event.session_id, str(conn))] = key
            if key in self._fired:
                return []
            times = self._times.setdefault(key, deque(maxlen=BEACON_MIN * 2))
            times.append(event.ts)
            if len(times) < BEACON_MIN:
                return []
            gaps = [(b - a) / 1e9 for a, b in zip(times, list(times)[1:])]
            median = statistics.median(gaps)
            if median < BEACON_MIN_PERIOD:
                return []
            spread = statistics.median(abs(g - median) for g in gaps) / median
            if spread > BEACON_MAX_SPREAD:
                return []
            self._period[key] = (median, spread, len(gaps) + 1)
            return [self._periodic(key, target)]

    def _mean_out(self, key: tuple[str, str]) -> float:
        sent = self._out.get(key) or {}
        return sum(sent.values()) / len(sent) if sent else 0.0

    def _periodic(self, key: tuple[str, str], target: str) -> Finding:
        """The finding for periodic connections to ``key`` (lock held): medium when
        they carry data out, else a low note."""
        median, spread, count = self._period[key]
        out = self._mean_out(key)
        beacon = out > BEACON_DATA_OUT
        self._fired[key] = Severity.MEDIUM if beacon else Severity.LOW
        what = (f"a beacon carrying data out ({out:.0f} bytes sent per connection)" if beacon
                else f"periodic polling of an allowed destination ({out:.0f} bytes sent per "
                     "connection, no data out): recorded, no penalty")
        return Finding(
            rule_id="detector.beacon_jitter",
            severity=self._fired[key],
            message=(f"connections to {target} every {median:.1f}s (spread {spread:.2f}) "
                     f"over {count} connections: {what}"),
            categories=("command_and_control",),
            mitre=("T1071", "T1029"),
            evidence={"destination": target, "period_seconds": round(median, 3),
                      "spread": round(spread, 3), "bytes_out_per_connection": round(out)},
        )

    def _data_out(self, event: Event) -> list[Finding]:
        """Bytes a polled destination's connections sent: a low poll whose connections
        start carrying data out is raised to a beacon (once)."""
        fields = event.fields
        sent = fields.get("net.bytes_out")
        conn = fields.get("net.conn_id")
        if sent is None or conn is None:
            return []
        with self._lock:
            key = self._conns.get((event.session_id, str(conn)))
            if key is None:
                return []
            per = self._out.setdefault(key, {})
            if len(per) < 4096 or str(conn) in per:
                per[str(conn)] = max(per.get(str(conn), 0), int(sent))
            if self._fired.get(key) is not Severity.LOW or self._mean_out(key) <= BEACON_DATA_OUT:
                return []
            return [self._periodic(key, key[1])]

    def _kept_alive(self, event: Event) -> list[Finding]:
        fields = event.fields
        spread = fields.get("net.shape_periodic")
        if spread is None or float(spread) > BEACON_MAX_SPREAD:
            return []
        key = (event.session_id, f"conn:{fields.get('net.conn_id')}")
        turns = max(1, int(fields.get("net.shape_turns") or 1))
        out = int(fields.get("net.bytes_out") or 0) / turns
        severity = Severity.MEDIUM if out > BEACON_DATA_OUT else Severity.LOW
        with self._lock:
            if self._fired.get(key) in (severity, Severity.MEDIUM):
                return []
            self._fired[key] = severity
        where = fields.get("net.sni") or fields.get("net.host") or fields.get("net.dst_ip")
        what = (f"a beacon carrying data out ({out:.0f} bytes sent per exchange)"
                if severity is Severity.MEDIUM else
                f"periodic polling ({out:.0f} bytes sent per exchange, no data out): "
                "recorded, no penalty")
        return [Finding(
            rule_id="detector.beacon_jitter",
            severity=severity,
            message=(f"periodic exchanges on one kept-alive connection to {where}:"
                     f"{fields.get('net.dst_port')} (spread {float(spread):.2f}): {what}"),
            categories=("command_and_control",),
            mitre=("T1071", "T1029"),
            evidence={"net.conn_id": fields.get("net.conn_id"), "spread": spread,
                      "bytes_out_per_exchange": round(out)},
        )]

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._fired = {k: v for k, v in self._fired.items() if k[0] != session_id}
            for table in (self._times, self._period, self._out, self._conns):
                for key in [k for k in table if k[0] == session_id]:
                    del table[key]  # type: ignore[attr-defined]


def network_detectors() -> list[Any]:
    """The gateway's detectors, for ``engine.detectors.default_detectors``."""
    from ..analysis.ssh import SshExecDetector

    return [ReconDetector(), DnsExfilDetector(), StreamCutDetector(), ShapeDetector(),
            BeaconDetector(), SshExecDetector()]
