"""Relay metrics: small in-process counters, exported to Prometheus when it is installed.

The relay only talks to ``RelayMetrics``, which keeps its values in process and exports them
to a ``prometheus_client`` registry. Exported names:
``runstate_relay_delivered_total``, ``runstate_relay_failed_total`` (transient failures),
``runstate_relay_dead_letters_total`` (each labelled by ``sink``),
``runstate_relay_publish_seconds`` (histogram of one batch publish, by ``sink``), and the gauges
``runstate_outbox_pending``, ``runstate_outbox_in_flight``, ``runstate_outbox_dead``,
``runstate_outbox_oldest_pending_age_seconds``.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import prometheus_client

_SAMPLES_KEPT = 2048
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _empty_counts() -> dict[str, int]:
    return {}


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricsSnapshot:
    """A copy of the in-process metrics at one moment."""

    delivered: dict[str, int] = field(default_factory=_empty_counts)
    failed: dict[str, int] = field(default_factory=_empty_counts)
    dead_letters: dict[str, int] = field(default_factory=_empty_counts)
    publishes: int = 0
    publish_seconds_sum: float = 0.0
    publish_seconds_p50: float | None = None
    publish_seconds_p99: float | None = None
    pending: int | None = None
    in_flight: int | None = None
    dead: int | None = None
    oldest_pending_age_seconds: float | None = None


class RelayMetrics:
    """Counters, a latency histogram and backlog gauges, kept locally and optionally exported.

    ``registry`` is the ``prometheus_client`` registry to export to (default: the global one);
    ``export=False`` keeps the metrics in process only. Metric names are registered once per
    registry, so share one instance per registry (``default_metrics()`` for the global one).
    """

    def __init__(self, *, registry: Any = None, export: bool = True) -> None:
        self._lock = threading.Lock()
        self._delivered: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._dead_letters: dict[str, int] = {}
        self._publishes = 0
        self._publish_sum = 0.0
        self._samples: deque[float] = deque(maxlen=_SAMPLES_KEPT)
        self._backlog: tuple[int, int, int, float | None] | None = None
        self._prom: dict[str, Any] | None = None
        if export:
            self._prom = _register(registry)

    def record_delivered(self, sink: str, count: int) -> None:
        """Count records the sink acknowledged."""
        self._add(self._delivered, "delivered", sink, count)

    def record_failed(self, sink: str, count: int) -> None:
        """Count failed attempts that will be retried."""
        self._add(self._failed, "failed", sink, count)

    def record_dead_letters(self, sink: str, count: int) -> None:
        """Count records dead-lettered."""
        self._add(self._dead_letters, "dead_letters", sink, count)

    def observe_publish(self, sink: str, seconds: float) -> None:
        """Record how long one batch publish took."""
        with self._lock:
            self._publishes += 1
            self._publish_sum += seconds
            self._samples.append(seconds)
        if self._prom is not None:
            self._prom["publish_seconds"].labels(sink=sink).observe(seconds)

    def set_backlog(
        self, *, pending: int, in_flight: int, dead: int, oldest_age_seconds: float | None
    ) -> None:
        """Record the outbox backlog as last seen by ``outbox_stats``."""
        with self._lock:
            self._backlog = (pending, in_flight, dead, oldest_age_seconds)
        if self._prom is not None:
            self._prom["pending"].set(pending)
            self._prom["in_flight"].set(in_flight)
            self._prom["dead"].set(dead)
            self._prom["oldest_age"].set(oldest_age_seconds or 0.0)

    def snapshot(self) -> MetricsSnapshot:
        """Return a copy of the current values."""
        with self._lock:
            samples = sorted(self._samples)
            backlog = self._backlog
            return MetricsSnapshot(
                delivered=dict(self._delivered),
                failed=dict(self._failed),
                dead_letters=dict(self._dead_letters),
                publishes=self._publishes,
                publish_seconds_sum=self._publish_sum,
                publish_seconds_p50=percentile(samples, 0.5),
                publish_seconds_p99=percentile(samples, 0.99),
                pending=None if backlog is None else backlog[0],
                in_flight=None if backlog is None else backlog[1],
                dead=None if backlog is None else backlog[2],
                oldest_pending_age_seconds=None if backlog is None else backlog[3],
            )

    def _add(self, counts: dict[str, int], name: str, sink: str, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            counts[sink] = counts.get(sink, 0) + count
        if self._prom is not None:
            self._prom[name].labels(sink=sink).inc(count)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0.01 to 0.99) of sorted values, interpolated; None for no values."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    cuts = statistics.quantiles(sorted_values, n=100, method="inclusive")
    return cuts[round(q * 100) - 1]


def _register(registry: Any) -> dict[str, Any]:
    target = prometheus_client.REGISTRY if registry is None else registry
    p = prometheus_client
    return {
        "delivered": p.Counter(
            "runstate_relay_delivered",
            "Outbox records delivered",
            ["sink"],
            registry=target,
        ),
        "failed": p.Counter(
            "runstate_relay_failed",
            "Failed deliveries that will be retried",
            ["sink"],
            registry=target,
        ),
        "dead_letters": p.Counter(
            "runstate_relay_dead_letters",
            "Outbox records dead-lettered",
            ["sink"],
            registry=target,
        ),
        "publish_seconds": p.Histogram(
            "runstate_relay_publish_seconds",
            "Time to publish one batch",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
            registry=target,
        ),
        "pending": p.Gauge("runstate_outbox_pending", "Outbox records waiting", registry=target),
        "in_flight": p.Gauge(
            "runstate_outbox_in_flight", "Outbox records leased to a relay", registry=target
        ),
        "dead": p.Gauge("runstate_outbox_dead", "Dead-lettered outbox records", registry=target),
        "oldest_age": p.Gauge(
            "runstate_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered record",
            registry=target,
        ),
    }


_default: RelayMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> RelayMetrics:
    """Return the process-wide metrics, exported to the global Prometheus registry."""
    global _default
    with _default_lock:
        if _default is None:
            _default = RelayMetrics()
        return _default
