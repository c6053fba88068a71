"""``/metrics``: Prometheus text exposition of what the audit trail says.

Every value is computed at scrape time from the index (a custom collector, no
global registry), so a counter here equals a count over ``bastion audit export``:
the trail is the single source, and a restarted server reports the same totals.

Names follow Prometheus conventions: ``bastion_`` prefix, ``_total`` on counters,
units in the name (``_seconds``, ``_bytes``). Rates (events/s) are PromQL's job:
``rate(bastion_events_total[1m])``.

Left out: the rule engine's latency histogram. Evaluation happens inside each
session's process and its timings are not written to the trail, so a server over a
state directory cannot observe them; it belongs to the per-node daemon that runs the
engines (issue 15), which can register a histogram in its own process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from .auditstatus import Verifier, checkpoint_info
from .breaker import run_summaries
from .index import Index

__all__ = ["LAG_BUCKETS", "LagHistogram", "TrailCollector", "registry_for"]

LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LagHistogram:
    """Seconds from a record's wall time to when this server first read it (includes
    the poll interval): how far the durable trail, as seen by readers, trails events."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LAG_BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        for i, bound in enumerate(LAG_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += seconds
        self.n += 1

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*LAG_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class TrailCollector(Collector):
    def __init__(self, index: Index, verifier: Verifier, lag: LagHistogram,
                 stream_stats: Callable[[], tuple[int, int, int, int]]) -> None:
        self.index = index
        self.verifier = verifier
        self.lag = lag
        self.stream_stats = stream_stats  # (clients, delivered, dropped, undelivered)

    def collect(self) -> Iterator[Metric]:
        index = self.index
        c = index.snapshot_counters()
        sessions = index.snapshot_sessions()

        created = CounterMetricFamily("bastion_sessions_created", "sessions created",
                                      labels=["run"])
        for run, n in sorted(c.sessions_created.items()):
            created.add_metric([run], n)
        yield created

        by_state: dict[tuple[str, str], int] = {}
        for s in sessions:
            key = (s.run_id, index.session_state(s))
            by_state[key] = by_state.get(key, 0) + 1
        states = GaugeMetricFamily("bastion_sessions", "sessions by state (live, frozen, "
                                   "terminated, quarantined, closed, lost)",
                                   labels=["run", "state"])
        for (run, state), n in sorted(by_state.items()):
            states.add_metric([run, state], n)
        yield states
        live = GaugeMetricFamily("bastion_sessions_live", "sessions running now (live or "
                                 "frozen)")
        live.add_metric([], sum(n for (_, st), n in by_state.items() if st in ("live",
                                                                                 "frozen")))
        yield live

        yield _counter("bastion_calls_started", "tool calls started", ["run"],
                       [((k,), v) for k, v in c.calls_started.items()])
        yield _counter("bastion_calls", "tool calls finished, by outcome", ["run", "outcome"],
                       c.calls_ended.items())
        yield _counter("bastion_events", "event records by kind (lifecycle and action "
                       "included)", ["kind"], [((k,), v) for k, v in c.events.items()])
        yield _counter("bastion_audit_records", "audit records by type", ["type"],
                       [((k,), v) for k, v in c.records.items()])
        yield _counter("bastion_verdicts", "verdicts by severity and action",
                       ["severity", "action"], c.verdicts.items())
        yield _counter("bastion_verdict_categories", "verdicts by category and severity (a "
                       "verdict counts once per category)", ["category", "severity"],
                       c.categories.items())
        yield _counter("bastion_actions", "actions taken (responder and operator), by "
                       "name and success", ["action", "ok"], c.actions.items())
        yield _counter("bastion_gateway_connections", "outbound connections decided by the "
                       "gateway", ["decision"], [((k,), v) for k, v in c.connections.items()])
        yield _counter("bastion_gateway_bytes", "bytes relayed by the gateway, counted when "
                       "connections close", ["decision", "direction"], c.bytes.items())
        yield _counter("bastion_dns_answers", "DNS questions answered by the session "
                       "resolver", ["decision", "rcode"], c.dns.items())
        yield _counter("bastion_firewall_dropped_packets", "packets dropped by session "
                       "firewalls", ["proto"], [((k,), v) for k, v in c.dropped_packets.items()])
        yield _counter("bastion_telemetry_reports", "sensor reports of lost events (loss), "
                       "degraded watching (gap) or other trouble (notice)", ["sensor", "what"],
                       c.telemetry.items())

        now = time.time()
        records = GaugeMetricFamily("bastion_audit_log_records", "records in a run's log",
                                    labels=["run"])
        age = GaugeMetricFamily("bastion_audit_checkpoint_age_seconds", "age of a run's "
                                "newest signed checkpoint", labels=["run"])
        tail = GaugeMetricFamily("bastion_audit_unanchored_records", "records no signed "
                                 "checkpoint covers yet", labels=["run"])
        verified = GaugeMetricFamily("bastion_audit_verify_ok", "1 if the last verify found "
                                     "the run's log intact, 0 if it found a problem",
                                     labels=["run"])
        verified_at = GaugeMetricFamily("bastion_audit_verify_timestamp_seconds",
                                        "when the last verify ran")
        for run in index.run_ids():
            path = index.run_path(run)
            if path is None:
                continue
            try:
                info = checkpoint_info(path)
            except Exception:  # noqa: BLE001 - a broken log shows as verify_ok 0
                info = None
            if info is not None:
                records.add_metric([run], info.records)
                tail.add_metric([run], info.unanchored)
                cp_age = info.age(now)
                if cp_age is not None:
                    age.add_metric([run], cp_age)
            result, at = self.verifier.result(run)
            if result is not None:
                verified.add_metric([run], 1.0 if result.ok else 0.0)
            if at is not None and not verified_at.samples:
                verified_at.add_metric([], at)
        yield from (records, age, tail, verified, verified_at)

        hist = HistogramMetricFamily("bastion_audit_read_lag_seconds",
                                     "seconds from an event to this server reading its durable "
                                     "record (includes the poll interval)")
        hist.add_metric([], self.lag.buckets(), sum_value=self.lag.total)
        yield hist

        tripped = GaugeMetricFamily("bastion_breaker_tripped", "1 if the run's circuit "
                                    "breaker paused it (from its run summary)", labels=["run"])
        for summary in run_summaries(index.state):
            tripped.add_metric([summary.run_id], 1.0 if summary.paused else 0.0)
        yield tripped

        clients, delivered, dropped, undelivered = self.stream_stats()
        g = GaugeMetricFamily("bastion_serve_stream_clients", "clients following the live "
                              "stream")
        g.add_metric([], clients)
        yield g
        yield _counter("bastion_serve_stream_delivered", "records queued to stream clients",
                       [], [((), delivered)])
        yield _counter("bastion_serve_stream_dropped", "records a slow stream client missed "
                       "(its queue was full; the client is told and disconnected)", [],
                       [((), dropped)])
        yield _counter("bastion_serve_stream_undelivered", "records queued for a stream client "
                       "whose stream ended first (it left, or took longer than the send "
                       "timeout to read)", [], [((), undelivered)])
        stats = index.statistics()
        g = GaugeMetricFamily("bastion_serve_poll_duration_seconds", "time the last poll "
                              "of the trail took")
        g.add_metric([], stats.last_poll_seconds)
        yield g


def _counter(name: str, doc: str, labels: list[str],
             items: Iterable[tuple[tuple[str, ...], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(items):
        family.add_metric(list(key), value)
    return family


def registry_for(collector: TrailCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
