"""A sink calling a Python coroutine function, for in-process consumers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..types import OutboxRecord
from .base import BaseSink, DeliveryOutcome, publish_per_run
from .cloudevents import check_source, to_cloudevent

EventHandler = Callable[[dict[str, Any]], Awaitable[object]]


class CallableSink(BaseSink):
    """Hand each record's CloudEvent (a dict) to ``handler``, per run in seq order.

    The handler returning means delivered; raising ``PermanentDeliveryError`` dead-letters the
    record; any other exception retries it later. ``concurrency`` > 1 lets different runs'
    events be handled concurrently (one run's events never are).
    """

    def __init__(
        self,
        handler: EventHandler,
        *,
        concurrency: int = 1,
        name: str = "callable",
        source: str | None = None,
    ):
        self._handler = handler
        self.source = check_source(source)
        self._concurrency = concurrency
        self.name = name

    async def publish(self, batch: Sequence[OutboxRecord]) -> list[DeliveryOutcome]:
        """Call the handler for every record of the batch."""

        async def one(record: OutboxRecord) -> None:
            await self._handler(to_cloudevent(record, self.event_source))

        return await publish_per_run(self, batch, one, concurrency=self._concurrency)
