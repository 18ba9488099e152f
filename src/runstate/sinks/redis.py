"""Redis Streams sink: one ``XADD`` per record, pipelined, optionally capped by ``MAXLEN``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio
import redis.exceptions

from .._url import mask_url
from ..types import OutboxRecord
from .base import BaseSink, DeliveryOutcome, option_float, option_int, render_subject, sink_options
from .cloudevents import check_source, encode_cloudevent, trace_headers

logger = logging.getLogger("runstate.relay.sinks.redis")

DEFAULT_STREAM = "runstate:events"


class RedisStreamSink(BaseSink):
    """Append CloudEvents to a Redis stream.

    Each entry has the fields ``id`` (the CloudEvent id), ``subject`` (run id), ``type``,
    ``seq`` and ``data`` (the whole CloudEvent as JSON). The stream key may contain
    ``{workflow}``, ``{type}`` or ``{run_id}``. ``maxlen`` trims approximately. Redis keeps no
    message ids, so consumers drop duplicates by ``id`` themselves.
    """

    messaging_system = "redis"

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        maxlen: int | None = None,
        timeout: float = 5.0,
        source: str | None = None,
    ) -> None:
        self._url = url
        self.source = check_source(source)
        self.name = mask_url(url, url)
        self.stream = stream
        self.maxlen = maxlen
        self._timeout = timeout
        self._client: redis.asyncio.Redis | None = None

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> RedisStreamSink:
        """Build from ``redis://[:pass@]host:6379/0?stream=S&maxlen=N``."""
        base, merged = sink_options(url, options, {"stream", "maxlen", "timeout", "source"})
        return cls(
            base,
            stream=str(merged.get("stream") or DEFAULT_STREAM),
            maxlen=option_int(merged, "maxlen", None),
            timeout=option_float(merged, "timeout", 5.0),
            source=merged.get("source"),
        )

    def trace_destination(self, record: OutboxRecord) -> str:
        """The stream key the record is appended to."""
        return render_subject(self.stream, record)

    async def open(self) -> None:
        """Create the client; Redis connects lazily, so a server that is down is fine here."""
        if self._client is None:
            self._client = redis.asyncio.Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
            )

    async def close(self) -> None:
        """Close the client and its connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def publish(self, batch: Sequence[OutboxRecord]) -> list[DeliveryOutcome]:
        """XADD the batch in one pipeline; Redis runs the commands in order."""
        await self.open()
        assert self._client is not None
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for record in batch:
                    event = record.event
                    trace: dict[Any, Any] = trace_headers(record)
                    pipe.xadd(
                        render_subject(self.stream, record),
                        {
                            "id": record.message_id,
                            "subject": event.run_id,
                            "type": event.type,
                            "seq": event.seq,
                            "data": encode_cloudevent(record, self.event_source),
                            **trace,
                        },
                        maxlen=self.maxlen,
                        approximate=True,
                    )
                results = await pipe.execute(raise_on_error=False)
        except (redis.exceptions.RedisError, OSError) as exc:
            return self.all_retry(batch, exc)
        outcomes: list[DeliveryOutcome] = []
        for record, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                outcomes.append(self.outcome_for(record, result))
            else:
                outcomes.append(DeliveryOutcome.delivered(record))
        return outcomes
