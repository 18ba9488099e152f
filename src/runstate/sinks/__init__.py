"""Sinks the relay delivers to, chosen by URL scheme; ``register_sink`` adds schemes."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from .._url import mask_url
from ..errors import InvalidInput
from .base import (
    BaseSink,
    DeliveryOutcome,
    DeliveryStatus,
    PermanentDeliveryError,
    Sink,
    SinkError,
    publish_per_run,
)
from .callable import CallableSink

SinkFactory = Callable[[str, Mapping[str, Any]], Sink]
"""Builds a sink from its URL and keyword options; it must not connect yet."""

_FACTORIES: dict[str, SinkFactory] = {}

# Built-in schemes import their module lazily, so each broker client stays an optional extra.
_BUILTIN: dict[str, tuple[str, str]] = {
    "nats": ("runstate.sinks.nats", "NatsSink"),
    "tls": ("runstate.sinks.nats", "NatsSink"),
    "amqp": ("runstate.sinks.rabbitmq", "RabbitMQSink"),
    "amqps": ("runstate.sinks.rabbitmq", "RabbitMQSink"),
    "redis": ("runstate.sinks.redis", "RedisStreamSink"),
    "rediss": ("runstate.sinks.redis", "RedisStreamSink"),
    "http": ("runstate.sinks.webhook", "WebhookSink"),
    "https": ("runstate.sinks.webhook", "WebhookSink"),
    "file": ("runstate.sinks.files", "FileSink"),
    "stdout": ("runstate.sinks.files", "StdoutSink"),
}


def register_sink(scheme: str, factory: SinkFactory) -> None:
    """Make ``create_sink`` hand URLs of ``scheme`` to ``factory`` (replacing any built-in)."""
    _FACTORIES[scheme.lower()] = factory


def supported_sink_schemes() -> list[str]:
    """Return the URL schemes ``create_sink`` understands."""
    return sorted(set(_FACTORIES) | set(_BUILTIN))


def create_sink(url: str, **options: Any) -> Sink:
    """Build the sink for ``url``; it connects on ``open()`` (or ``async with``)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    factory = _FACTORIES.get(scheme)
    if factory is None and scheme in _BUILTIN:
        module_name, class_name = _BUILTIN[scheme]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise InvalidInput(
                f"the {scheme}:// sink needs an extra that is not installed ({exc.name}); "
                "install runstate[all]",
                field="sink_url",
            ) from None
        factory = getattr(module, class_name).from_url
    if factory is None:
        raise InvalidInput(
            f"unsupported sink URL {mask_url(url, url)!r}; supported: "
            + ", ".join(s + "://" for s in supported_sink_schemes()),
            field="sink_url",
        )
    return factory(url, options)


@contextlib.asynccontextmanager
async def open_sink(url: str, **options: Any) -> AsyncIterator[Sink]:
    """Build the sink for ``url``, open it, and close it on exit."""
    sink = create_sink(url, **options)
    await sink.open()
    try:
        yield sink
    finally:
        await sink.close()


__all__ = [
    "BaseSink",
    "CallableSink",
    "DeliveryOutcome",
    "DeliveryStatus",
    "PermanentDeliveryError",
    "Sink",
    "SinkError",
    "SinkFactory",
    "create_sink",
    "open_sink",
    "publish_per_run",
    "register_sink",
    "supported_sink_schemes",
]
