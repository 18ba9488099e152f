"""Relay metrics: small in-process counters, exported to Prometheus when it is installed.

The relay only talks to ``RelayMetrics``, which keeps its values in process and exports them
to a ``prometheus_client`` registry. Exported names:
``runstate_relay_delivered_total``, ``runstate_relay_failed_total`` (transient failures),
``runstate_relay_dead_letters_total`` (each labelled by ``sink``),
``runstate_relay_publish_seconds`` (histogram of one batch publish, by ``sink``), and the gauges
``runstate_outbox_pending``, ``runstate_outbox_in_flight``, ``runstate_outbox_dead``,
``runstate_outbox_oldest_pending_age_seconds``.

The backlog gauges are read at scrape time: while a relay runs, a scrape finding them older
than ``BACKLOG_MAX_AGE`` has the relay's loop read ``outbox_stats`` first, so what Prometheus
sees is at most a second old, however long the relay's own stats interval is.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import prometheus_client
from prometheus_client.core import GaugeMetricFamily

_SAMPLES_KEPT = 2048
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: The oldest backlog a scrape reports while a relay runs, in seconds.
BACKLOG_MAX_AGE = 1.0
# How long a scrape waits for the relay's loop to read the backlog before reporting the last.
_REFRESH_TIMEOUT = 5.0

BacklogRefresh = Callable[[], Coroutine[Any, Any, None]]


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
        self._backlog_at = float("-inf")
        self._watch: tuple[asyncio.AbstractEventLoop, BacklogRefresh] | None = None
        self._refresh_lock = threading.Lock()
        self._prom: dict[str, Any] | None = None
        if export:
            self._prom = _register(registry)
            target = prometheus_client.REGISTRY if registry is None else registry
            target.register(_BacklogCollector(self))

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
            self._backlog_at = time.monotonic()

    def watch_backlog(self, loop: asyncio.AbstractEventLoop, refresh: BacklogRefresh) -> None:
        """Have scrapes run ``refresh()`` on ``loop`` when the backlog is more than
        ``BACKLOG_MAX_AGE`` old (it calls ``set_backlog``); the relay does this while it runs."""
        with self._lock:
            self._watch = (loop, refresh)

    def unwatch_backlog(self, refresh: BacklogRefresh) -> None:
        """Stop refreshing through ``refresh`` (if it is still the one watched)."""
        with self._lock:
            if self._watch is not None and self._watch[1] == refresh:
                self._watch = None

    def refresh_backlog(self) -> None:
        """Bring the backlog up to date for a scrape (called on the scraping thread)."""
        # Concurrent scrapes: one reads the store, the others then find the result fresh.
        with self._refresh_lock:
            with self._lock:
                watch = self._watch
                fresh = time.monotonic() - self._backlog_at <= BACKLOG_MAX_AGE
            if watch is None or fresh:
                return
            loop, refresh = watch
            if loop.is_closed() or _running_loop() is loop:
                return  # a scrape on the relay's own loop cannot wait for it: the last values
            future = asyncio.run_coroutine_threadsafe(refresh(), loop)
            try:
                future.result(timeout=_REFRESH_TIMEOUT)
            except Exception:
                future.cancel()  # the store is slow or down: the scrape shows the last values

    def backlog(self) -> tuple[int, int, int, float | None] | None:
        """The last backlog recorded: pending, in flight, dead, oldest pending age; or None."""
        with self._lock:
            return self._backlog

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


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _BacklogCollector:
    """The backlog gauges, read when Prometheus collects (0 until a backlog was recorded)."""

    _GAUGES = (
        ("runstate_outbox_pending", "Outbox records waiting"),
        ("runstate_outbox_in_flight", "Outbox records leased to a relay"),
        ("runstate_outbox_dead", "Dead-lettered outbox records"),
        ("runstate_outbox_oldest_pending_age_seconds", "Age of the oldest undelivered record"),
    )

    def __init__(self, metrics: RelayMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The gauges' names, for the registry's duplicate check (no store read)."""
        for name, documentation in self._GAUGES:
            yield GaugeMetricFamily(name, documentation)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges with the backlog refreshed first, when a relay is running."""
        self._metrics.refresh_backlog()
        backlog = self._metrics.backlog() or (0, 0, 0, None)
        for (name, documentation), value in zip(self._GAUGES, backlog, strict=True):
            yield GaugeMetricFamily(name, documentation, value=float(value or 0.0))


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
