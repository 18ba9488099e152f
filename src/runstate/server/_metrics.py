"""Prometheus metrics of the HTTP API, in a registry of the app's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..types import OutboxStats

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ServerMetrics:
    """Request counts and latencies per operation, live streams, and the outbox backlog.

    Each app has its own registry, so several servers in one process (tests) never collide.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "runstate_http_requests",
            "HTTP requests handled, by operation and status code.",
            ["operation", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "runstate_http_request_duration_seconds",
            "Time to handle a request, by operation (streams: until the headers).",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.streams = Gauge(
            "runstate_http_open_streams",
            "Server-Sent Events streams open now.",
            registry=self.registry,
        )
        self._outbox = Gauge(
            "runstate_outbox_records",
            "Outbox records by state, read when metrics are scraped.",
            ["state"],
            registry=self.registry,
        )
        # Children are cached: labels() costs more than the increment itself.
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def observe(self, operation: str, status: int, seconds: float) -> None:
        """Count one handled request."""
        key = (operation, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self._requests.labels(operation, str(status)),
                self._latency.labels(operation),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self, stats: OutboxStats | None) -> bytes:
        """Return the Prometheus text exposition, with the outbox gauges refreshed."""
        if stats is not None:
            for state, value in (
                ("pending", stats.pending),
                ("in_flight", stats.in_flight),
                ("dead", stats.dead),
                ("delivered", stats.delivered),
            ):
                self._outbox.labels(state).set(value)
        return generate_latest(self.registry)
