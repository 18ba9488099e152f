"""The relay stage: claim outbox records and deliver them, in per-run order, to a sink.

``delivery`` holds the ``Relay`` loop (claim, publish, settle, retry with backoff),
``runner`` the process around it (``run_relay``: URLs, signals), ``metrics`` the counters and
gauges it exports. Sinks and the CloudEvents envelope live in ``runstate.sinks``.
"""

from .delivery import Relay, RelayReport, default_owner
from .metrics import MetricsSnapshot, RelayMetrics, default_metrics, percentile
from .runner import run_relay

__all__ = [
    "MetricsSnapshot",
    "Relay",
    "RelayMetrics",
    "RelayReport",
    "default_metrics",
    "default_owner",
    "percentile",
    "run_relay",
]
