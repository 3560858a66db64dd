"""Prometheus metrics, served on their own HTTP port (never on the gRPC port).

Labels are method names, status codes, signal type names and API key ids (the number in
``apiKeys/{id}``, for the per-partner series): never a hash value, a case number or key
material. The standard ``process_*`` series (memory, CPU, open files) come with them. Index
sizes are read from the bank when Prometheus scrapes, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from matcher.bank import Bank
from matcher.principal import Principal

__all__ = ["Metrics"]

# From 100 us (an in-memory miss) to 10 s (a large batch on a cold machine).
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
)  # fmt: skip


class _BankCollector(Collector):
    def __init__(self, bank: Bank) -> None:
        self._bank = bank

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._bank.stats(by=Principal.operator("metrics"))
        size = GaugeMetricFamily(
            "matcher_index_hashes", "Hashes in the in-memory index", labels=["signal"]
        )
        for name, count in stats.indexed.items():
            size.add_metric([name], count)
        yield size
        yield GaugeMetricFamily("matcher_ready", "1 once the index is loaded", value=stats.ready)
        yield GaugeMetricFamily(
            "matcher_index_load_seconds",
            "Seconds the last index load from the store took",
            value=stats.load_seconds or 0.0,
        )
        cases = GaugeMetricFamily("matcher_cases", "Cases by state", labels=["state"])
        for state, count in stats.cases.items():
            cases.add_metric([str(state)], count)
        yield cases
        yield GaugeMetricFamily(
            "matcher_items", "Active items (enrolled images) in the bank", value=stats.items
        )
        follower = self._bank.follower
        lag = follower.lag_seconds
        yield GaugeMetricFamily(
            "matcher_follower_lag_seconds",
            "Seconds since this replica's index last reached the end of the store's change log",
            value=-1.0 if lag is None else lag,
        )
        yield GaugeMetricFamily(
            "matcher_follower_healthy", "1 while the index is caught up", value=follower.healthy
        )
        yield CounterMetricFamily(
            "matcher_follower_changes",
            "Change-log entries applied to this replica's index",
            value=follower.applied_total,
        )
        bank = self._bank
        verdicts = CounterMetricFamily(
            "matcher_verdicts",
            "Partner verdicts recorded by this replica, by verdict (correct, wrong)",
            labels=["verdict"],
        )
        for verdict in ("correct", "wrong"):
            verdicts.add_metric([verdict], bank.verdicts[verdict])
        yield verdicts
        quarantines = CounterMetricFamily(
            "matcher_quarantines",
            "Items this replica quarantined, by reason (reports, flood): each one waits for a "
            "practitioner's review",
            labels=["reason"],
        )
        quarantines.add_metric(["reports"], bank.quarantines["reports"])
        quarantines.add_metric(["flood"], bank.flood.quarantined)
        yield quarantines
        yield CounterMetricFamily(
            "matcher_flood_flushes",
            "Flood control flushes of this replica's match counts to the store",
            value=bank.flood.flushes,
        )
        yield CounterMetricFamily(
            "matcher_follower_reloads",
            "Reloads from a snapshot because the change log was trimmed past this replica",
            value=follower.reloads,
        )


class _AllowlistCollector(Collector):
    # Read from the bank's allowlist at each scrape: this replica's counts, no hash value.
    def __init__(self, bank: Bank) -> None:
        self._bank = bank

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        allowlist = self._bank.allowlist
        yield GaugeMetricFamily(
            "matcher_allowlist_entries", "Entries of the allowlist held", value=len(allowlist)
        )
        yield CounterMetricFamily(
            "matcher_allowlist_suppressed",
            "Query hashes whose hits were suppressed because they look like an allowlist entry",
            value=allowlist.suppressed,
        )
        yield CounterMetricFamily(
            "matcher_allowlist_refused",
            "Enrollment calls refused because an item looks like an allowlist entry",
            value=allowlist.refused,
        )
        yield CounterMetricFamily(
            "matcher_allowlist_reloads",
            "Times this replica read the allowlist from the store (its version moved)",
            value=allowlist.reloads,
        )


class Metrics:
    """The service's metrics, in a registry of their own (one per server)."""

    def __init__(self, bank: Bank) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "matcher_requests",
            "RPCs handled, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "matcher_request_seconds",
            "RPC handling time, by method",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.hashes = Counter(
            "matcher_hashes",
            "Hashes received, by operation and signal type",
            ["op", "signal"],
            registry=self.registry,
        )
        self.matches = Counter(
            "matcher_matches", "Matches returned to partners", registry=self.registry
        )
        self.probe_alarms = Counter(
            "matcher_probe_alarms",
            "Probing alarms (partner keys throttled or suspended), by bound and action: "
            "alert on any",
            ["kind", "action"],
            registry=self.registry,
        )
        # Per partner, by API key id: an operator can see which partner's traffic moved (a
        # pipeline gone quiet, a sudden flood) and alert per partner. Key ids are few (one per
        # partner integration) and carry nothing secret.
        self.partner_hashes = Counter(
            "matcher_partner_hashes",
            "Hashes partners sent to match, by API key id",
            ["key"],
            registry=self.registry,
        )
        self.partner_matches = Counter(
            "matcher_partner_matches",
            "Matches returned, by API key id",
            ["key"],
            registry=self.registry,
        )
        self.invalid = Counter(
            "matcher_invalid_requests",
            "Requests refused as malformed (INVALID_ARGUMENT), by method",
            ["method"],
            registry=self.registry,
        )
        self.victim_refused = Counter(
            "matcher_victim_refused",
            "Victim calls refused: wrong number or secret, or too many failures from an address",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(_BankCollector(bank))
        self.registry.register(_AllowlistCollector(bank))
        # The process itself, read from /proc at each scrape: resident and virtual memory,
        # CPU seconds, open and allowed file descriptors, start time (process_* series), so
        # an operator can alert on a leak or on descriptors running out.
        ProcessCollector(registry=self.registry)
        self._server: object | None = None
        self._children: dict[tuple[str, ...], Any] = {}

    def done(self, method: str, code: str, seconds: float) -> None:
        """Count one finished call and its latency."""
        # labels() validates and locks on every call; the children are cached here instead
        # (a few microseconds per call at thousands of calls per second).
        key = (method, code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(method, code)
        child.inc()
        if code == "INVALID_ARGUMENT":
            self.invalid.labels(method).inc()
        latency = self._children.get((method,))
        if latency is None:
            latency = self._children[(method,)] = self.latency.labels(method)
        latency.observe(seconds)

    def probe_alarm(self, kind: str, action: str) -> None:
        """Count one probing alarm."""
        self.probe_alarms.labels(kind, action).inc()

    def count_hashes(self, op: str, signal: str, n: int = 1) -> None:
        """Count hashes received for ``op`` (match, enroll) of one signal type."""
        key = ("hashes", op, signal)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.hashes.labels(op, signal)
        child.inc(n)

    def partner(self, key_id: int, hashes: int, matches: int) -> None:
        """Count one partner request's hashes and the matches it was answered with."""
        key = ("partner", str(key_id))
        children = self._children.get(key)
        if children is None:
            label = str(key_id)
            children = self._children[key] = (
                self.partner_hashes.labels(label),
                self.partner_matches.labels(label),
            )
        children[0].inc(hashes)
        children[1].inc(matches)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` over HTTP on ``addr:port`` (0 picks a free port); return the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
            self._server.server_close()  # type: ignore[attr-defined]
            self._server = None
