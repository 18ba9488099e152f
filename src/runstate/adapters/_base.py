"""What every adapter shares: the closed-store check and ``async with``, per-waiter error
copies, first-occurrence dedupe, and building results without reading them back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Self

from .._validation import CheckedEvent
from ..errors import StoreClosed, StoreUnavailable
from ..types import (
    RunBootstrapInput,
    RunEventPersisted,
    RunMetadata,
    new_persisted_event,
    same_run_identity,
)


class StoreBase:
    """The life cycle every adapter shares: ``async with`` and the closed check.

    Subclasses implement ``_close`` (release connections and threads); ``close`` calls it
    once, and every method calls ``_check_open`` first.
    """

    _closed: bool = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    async def close(self) -> None:
        """Release the store's resources; it is unusable afterwards. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._close()

    async def _close(self) -> None:
        """Release what the adapter holds; called once, by ``close``."""

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()


def copy_error(error: BaseException) -> BaseException:
    """One exception object per waiting caller, so tracebacks never pile up on a shared one.

    Used where one failure answers several calls (a group commit lost with its connection).
    A cancellation of the shared work is reported to each caller as a retryable failure.
    """
    if isinstance(error, StoreUnavailable):
        copy = StoreUnavailable(str(error), retryable=error.retryable)
        copy.__cause__ = error.__cause__
        return copy
    if isinstance(error, asyncio.CancelledError):
        return StoreUnavailable("the batched write was cancelled before it finished")
    return error


def first_occurrences(events: Sequence[CheckedEvent]) -> list[int]:
    """Indexes (0-based, in call order) of the first event with each event id."""
    seen: set[str] = set()
    firsts: list[int] = []
    for index, item in enumerate(events):
        event_id = item.event.event_id
        if event_id not in seen:
            seen.add(event_id)
            firsts.append(index)
    return firsts


def persisted_event(
    item: CheckedEvent, run_id: str, seq: int, position: int, recorded_at: datetime
) -> RunEventPersisted:
    """The stored form of a validated event, without reading it back.

    The payload is the validation's private copy, which equals the stored JSON read back;
    ``occurred_at`` is normalized to UTC as every adapter returns it.
    """
    event = item.event
    occurred_at = event.occurred_at
    stored: RunEventPersisted = new_persisted_event(
        run_id,
        seq,
        position,
        event.type,
        item.payload,
        event.event_id,
        event.schema_version,
        None if occurred_at is None else occurred_at.astimezone(UTC),
        recorded_at,
    )
    return stored


def unique_first_event_ids(request: RunBootstrapInput) -> list[str]:
    """The ids a bootstrap stores: its first events' ids, duplicates dropped, in order."""
    return list(dict.fromkeys(event.event_id for event in request.first_events))


def is_same_bootstrap(
    request: RunBootstrapInput, stored: RunMetadata, stored_first_ids: list[str]
) -> bool:
    """Tell whether a stored run came from ``request``: same metadata and first event ids.

    ``stored_first_ids`` are the ids of the run's first stored events, as many as
    ``unique_first_event_ids(request)`` holds. A retry after an ambiguous commit matches;
    a different request for the same run id does not.
    """
    return (
        same_run_identity(request.metadata, stored)
        and unique_first_event_ids(request) == stored_first_ids
    )
