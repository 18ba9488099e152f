"""RabbitMQ sink: persistent messages, publisher confirms, ``message_id`` = the CloudEvent id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import aio_pika.abc

from .._url import mask_url
from ..types import OutboxRecord
from .base import (
    BaseSink,
    DeliveryOutcome,
    SinkError,
    option_float,
    render_subject,
    sink_options,
)
from .cloudevents import CONTENT_TYPE, check_source, encode_cloudevent, trace_headers

logger = logging.getLogger("runstate.relay.sinks.rabbitmq")

DEFAULT_EXCHANGE = "runstate"
DEFAULT_ROUTING_KEY = "runstate.{workflow}"
_TRUE = {"1", "true", "yes", "on"}


class RabbitMQSink(BaseSink):
    """Publish CloudEvents to an exchange (declared durable when missing) with confirms.

    The routing key may contain ``{workflow}``, ``{type}`` or ``{run_id}``. Publishes are
    pipelined on one channel, which the broker processes in order. Unroutable messages are
    dropped by the broker and count as delivered, unless ``mandatory=true`` makes them retry.
    """

    messaging_system = "rabbitmq"

    def __init__(
        self,
        url: str,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        exchange_type: str = "topic",
        routing_key: str = DEFAULT_ROUTING_KEY,
        declare: bool = True,
        mandatory: bool = False,
        timeout: float = 10.0,
        source: str | None = None,
    ) -> None:
        self._url = url
        self.source = check_source(source)
        self.name = mask_url(url, url)
        self.exchange_name = exchange
        self.exchange_type = aio_pika.ExchangeType(exchange_type)
        self.routing_key = routing_key
        self._declare = declare
        self._mandatory = mandatory
        self._timeout = timeout
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> RabbitMQSink:
        """Build from ``amqp://user:pass@host:5672/vhost?exchange=E&routing_key=K``."""
        known = {
            "exchange",
            "exchange_type",
            "routing_key",
            "declare",
            "mandatory",
            "timeout",
            "source",
        }
        base, merged = sink_options(url, options, known)
        return cls(
            base,
            exchange=str(merged.get("exchange", DEFAULT_EXCHANGE)),
            exchange_type=str(merged.get("exchange_type", "topic")),
            routing_key=str(merged.get("routing_key") or DEFAULT_ROUTING_KEY),
            declare=str(merged.get("declare", "true")).lower() in _TRUE,
            mandatory=str(merged.get("mandatory", "false")).lower() in _TRUE,
            timeout=option_float(merged, "timeout", 10.0),
            source=merged.get("source"),
        )

    def trace_destination(self, record: OutboxRecord) -> str:
        """The exchange (RabbitMQ's destination; the routing key is not part of it)."""
        return self.exchange_name

    async def open(self) -> None:
        """Connect and declare the exchange; a broker that is down is retried later."""
        try:
            await self._ensure_ready()
        except Exception as exc:
            logger.warning("RabbitMQ sink %s not ready yet: %s", self.name, self.describe(exc))

    async def close(self) -> None:
        """Close the channel and the connection."""
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            await connection.close()

    async def _ensure_ready(self) -> aio_pika.abc.AbstractExchange:
        if self._exchange is not None and self._channel is not None and not self._channel.is_closed:
            return self._exchange
        if self._connection is None:
            self._connection = await aio_pika.connect_robust(self._url, timeout=self._timeout)
        try:
            channel = self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=self._mandatory
            )
            if not self.exchange_name:
                self._exchange = channel.default_exchange
            elif self._declare:
                self._exchange = await channel.declare_exchange(
                    self.exchange_name, self.exchange_type, durable=True
                )
            else:
                self._exchange = await channel.get_exchange(self.exchange_name, ensure=True)
        except BaseException:
            # A half-set-up connection would be reused forever; start over next time.
            await self.close()
            raise
        return self._exchange

    async def publish(self, batch: Sequence[OutboxRecord]) -> list[DeliveryOutcome]:
        """Publish the batch pipelined on one channel and wait for every confirm."""
        try:
            exchange = await self._ensure_ready()
        except Exception as exc:
            return self.all_retry(batch, exc)

        async def one(record: OutboxRecord) -> None:
            event = record.event
            message = aio_pika.Message(
                encode_cloudevent(record, self.event_source),
                content_type=CONTENT_TYPE,
                content_encoding="utf-8",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=record.message_id,
                timestamp=event.recorded_at,
                type=event.type,
                app_id="runstate",
                headers={
                    "ce_seq": event.seq,
                    "ce_subject": event.run_id,
                    **trace_headers(record),
                },
            )
            await exchange.publish(
                message,
                routing_key=render_subject(self.routing_key, record),
                mandatory=self._mandatory,
                timeout=self._timeout,
            )

        # Tasks start in creation order and the channel's publish lock is FIFO: batch order holds.
        tasks = [asyncio.ensure_future(one(record)) for record in batch]
        await asyncio.wait(tasks)
        outcomes: list[DeliveryOutcome] = []
        for record, task in zip(batch, tasks, strict=True):
            error = task.exception()
            if error is None:
                outcomes.append(DeliveryOutcome.delivered(record))
            elif isinstance(error, TimeoutError):
                timeout = SinkError(f"no publisher confirm within {self._timeout:g}s")
                outcomes.append(self.outcome_for(record, timeout))
            else:
                outcomes.append(self.outcome_for(record, error))
        return outcomes
