"""A claim made while the batch before it is delivered: private to ``runstate.relay``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

from ..store import OutboxStore
from ..types import OutboxRecord


class ClaimAhead:
    """A claim running while the batch before it is delivered (see ``Relay._worker``)."""

    __slots__ = ("started", "task")

    def __init__(self, claim: Coroutine[Any, Any, list[OutboxRecord]]) -> None:
        self.started = time.monotonic()
        self.task: asyncio.Task[list[OutboxRecord]] = asyncio.ensure_future(claim)

    async def give_back(self, store: OutboxStore, owner: str) -> None:
        """Let the claim finish (a cancelled one may still lease records), then release them."""
        with contextlib.suppress(Exception):
            batch = await self.task
            if batch:
                await store.release_outbox([record.outbox_id for record in batch], owner=owner)
